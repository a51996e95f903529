"""`autoresearch`: run research orgs locally, compare them, plot them."""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import report
from .core.gitrepo import CredentialsUnavailable, OrgRepo, PushCredentials
from .core.journal import Journal
from .core.loop import BaselineFailed, ResearchLoop, budget_exhausted, reconcile
from .executor import TRAINER_DIR, LocalExecutor, baseline_train_py
from .proposers import ProposerConfigError, make_proposer
from .spec import Org, OrgSpecError, load_orgs


def _piped_width(environ: Mapping[str, str]) -> int:
    """Piped output (CI logs, `| tee`) is at least 160 columns wide, so the comparison table keeps
    its names on one line even under a shell's COLUMNS=80; wider when COLUMNS asks for it."""
    columns = environ.get("COLUMNS", "")
    return max(160, int(columns)) if columns.isdigit() else 160


console = Console(width=None if sys.stdout.isatty() else _piped_width(os.environ))


# -- workdir layout -------------------------------------------------------------------------


def data_dir(workdir: Path) -> Path:
    return workdir / "data"


def org_dir(workdir: Path, org: str) -> Path:
    return workdir / "orgs" / org


def ensure_prepared(workdir: Path, corpus: list[str], vocab_size: int | None) -> Path:
    """Run the trainer image's prepare.py (idempotent: it skips what exists)."""
    target = data_dir(workdir)
    cmd = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--data-dir", str(target)]
    for source in corpus:
        cmd += ["--source", source]
    if vocab_size:
        cmd += ["--vocab-size", str(vocab_size)]
    console.print(f"[bold]prepare[/] {target} from {', '.join(corpus)}")
    subprocess.run(cmd, check=True)
    return target


# -- run --------------------------------------------------------------------------------------

REPO_CREDENTIALS_ENV = "AUTORESEARCH_REPO_CREDENTIALS"


def local_push_credentials(
    org: Org, environ: Mapping[str, str] = os.environ
) -> PushCredentials | None:
    """Locally there is no Secret: an org with spec.repo.credentialsSecretRef pushes with the
    token or SSH private key in $AUTORESEARCH_REPO_CREDENTIALS. Without a reference, git's own
    configuration (ssh agent, credential helpers) applies."""
    if org.spec.repo.credentialsSecretRef is None:
        return None
    if not environ.get(REPO_CREDENTIALS_ENV):
        raise CredentialsUnavailable(
            f"spec.repo.credentialsSecretRef names a Secret, which only the operator reads; "
            f"locally, set {REPO_CREDENTIALS_ENV} to the token or SSH private key"
        )
    return PushCredentials(environ[REPO_CREDENTIALS_ENV])


def _apply_overrides(org: Org, args: argparse.Namespace) -> Org:
    spec = org.spec
    trainer = spec.trainer.model_copy(
        update={
            k: v
            for k, v in {
                "profile": args.profile or ("tiny" if args.quick else None),
                "timeBudgetSeconds": args.time_budget or (15 if args.quick else None),
            }.items()
            if v is not None
        }
    )
    budget = spec.budget.model_copy(
        update={
            "maxExperiments": args.max_experiments
            or (6 if args.quick else spec.budget.maxExperiments)
        }
    )
    proposer = spec.proposer
    if args.proposer == "mutate" or (
        args.proposer == "auto" and not os.environ.get(proposer.apiKeyEnv)
    ):
        if proposer.type == "openai":
            console.print(
                f"[yellow]{org.name}: ${proposer.apiKeyEnv} is not set; using the offline mutate proposer[/]"
            )
        proposer = proposer.model_copy(update={"type": "mutate"})
    elif args.proposer in ("auto", "openai") and os.environ.get(proposer.apiKeyEnv):
        proposer = proposer.model_copy(
            update={
                "type": "openai",
                "model": proposer.model or os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
                "baseURL": proposer.baseURL or os.environ.get("OPENAI_BASE_URL"),
            }
        )
    new_spec = spec.model_copy(update={"trainer": trainer, "budget": budget, "proposer": proposer})
    return org.model_copy(update={"spec": new_spec})


def cmd_run(args: argparse.Namespace) -> int:
    from .display import LiveDisplay

    workdir = Path(args.workdir)
    try:
        orgs = load_orgs(Path(args.org_yaml))
    except OrgSpecError as err:
        console.print(f"[red]{err}[/]")
        return 2
    if args.org:
        orgs = [o for o in orgs if o.name in args.org]
    orgs = [_apply_overrides(o, args) for o in orgs]
    data = ensure_prepared(workdir, args.corpus, args.vocab_size)
    repo = OrgRepo.open_or_init(workdir / "repo", baseline_train_py())
    for org in orgs:
        directory = org_dir(workdir, org.name)
        directory.mkdir(parents=True, exist_ok=True)
        journal = Journal(directory)
        executor = LocalExecutor(
            data, directory / "experiments", device=args.device, sandbox=args.sandbox
        )
        state = reconcile(org, repo, journal)
        if (why := budget_exhausted(org, state)) is not None:
            console.print(f"[bold]{org.name}[/]: already done — {why}")
            continue
        try:
            proposer = make_proposer(org.spec.proposer.model_dump())
        except ProposerConfigError as err:
            console.print(
                f"[red]{org.name}: {err}[/] (or run with --proposer mutate for the offline proposer)"
            )
            return 2
        if org.spec.repo.url and org.spec.repo.credentialsSecretRef:
            try:
                local_push_credentials(org)
            except CredentialsUnavailable as err:
                console.print(f"[yellow]{org.name}: pushes will fail: {err}[/]")
        try:
            with LiveDisplay(console, org) as display:
                ResearchLoop(
                    org, repo, journal, executor, proposer, observer=display,
                    push_credentials=functools.partial(local_push_credentials, org),
                ).run()  # fmt: skip
        except BaselineFailed as err:
            console.print(f"[red]{org.name}: {err}[/]", highlight=False)
            console.print("fix the cause and run the same command again; it retries the baseline")
            return 1
        console.print(f"[bold]{org.name}[/]: branch {org.branch} in {repo.path}, log {journal.tsv}")
    return 0


# -- compare / plot -----------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _cluster_orgs(args: argparse.Namespace) -> list[dict] | None:
    """The ResearchOrgs that --cluster names, or None after printing why they can't be read."""
    from .cluster_report import ClusterReadError, load_orgs

    try:
        orgs = load_orgs("*" if args.all_namespaces else args.namespace)
    except ClusterReadError as err:
        console.print(f"[red]{err}[/]")
        return None
    if args.org:
        orgs = [o for o in orgs if o["metadata"]["name"] in args.org]
    if not orgs:
        where = (
            "any namespace" if args.all_namespaces else f"namespace {args.namespace or '(current)'}"
        )
        console.print(f"no ResearchOrgs in {where}")
        return None
    return orgs


def cmd_compare(args: argparse.Namespace) -> int:
    if args.cluster:
        from .cluster_report import org_label, summary_from_org

        orgs = _cluster_orgs(args)
        if orgs is None:
            return 1
        summaries = [summary_from_org(o, org_label(o, args.all_namespaces)) for o in orgs]
        title = "research orgs (ResearchOrg status)"
    else:
        records = report.load_all(Path(args.workdir) / "orgs")
        if args.org:
            records = {k: v for k, v in records.items() if k in args.org}
        if not records:
            console.print(f"no orgs with experiments under {args.workdir}/orgs")
            return 1
        summaries = [report.summarize(o, r) for o, r in records.items()]
        title = "research orgs"
    print_comparison(summaries, title)
    return 0


def print_comparison(summaries: list[report.OrgSummary], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("org", "proposer", "best (runs)", "best test_bpb", "baseline", "Δ", "σ (runs)",
                "experiments", "kept", "discarded", "crashed", "confirmed", "keep rate",
                "GPU time", "of it verifying", "LLM tokens"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("org", "proposer") else "right")
    for s in sorted(summaries, key=lambda s: (s.best is None, s.best or 0.0)):
        table.add_row(
            s.org, s.proposer, _with_n(s.best, s.best_runs), _fmt(s.best_test), _fmt(s.baseline),
            _fmt(s.improvement, "+.4f"), _with_n(s.sigma, s.sigma_runs), str(s.experiments),
            str(s.kept), str(s.discarded), str(s.crashed), str(s.confirmed),
            _fmt(s.keep_rate, ".0%"), f"{s.gpu_seconds / 60:.1f} min",
            f"{s.verification_gpu_seconds / 60:.1f} min", str(s.llm_tokens),
        )  # fmt: skip
    console.print(table)
    console.print(
        "best: the mean over the best commit's runs; σ: how much val_bpb varies between runs "
        "of the same code; confirmed: candidates that went past the screening run",
        style="dim",
    )


def _with_n(x: float | None, n: int | None) -> str:
    return _fmt(x) if x is None or not n else f"{x:.4f} ({n})"


def cmd_plot(args: argparse.Namespace) -> int:
    titles = None
    if args.cluster:
        from .cluster_report import org_label, plot_title, records_from_status

        orgs = _cluster_orgs(args)
        if orgs is None:
            return 1
        labels = [org_label(o, args.all_namespaces) for o in orgs]
        records = {
            label: records_from_status(o.get("status") or {})
            for label, o in zip(labels, orgs, strict=True)
        }
        titles = {
            label: plot_title(label, o.get("status") or {})
            for label, o in zip(labels, orgs, strict=True)
        }
    else:
        records = report.load_all(Path(args.workdir) / "orgs")
        if args.org:
            records = {k: v for k, v in records.items() if k in args.org}
    try:
        out = report.plot_progress(records, Path(args.output), titles=titles)
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        return 1
    console.print(f"wrote {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    ensure_prepared(Path(args.workdir), args.corpus, args.vocab_size)
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from . import crd, crd_reference

    sys.stdout.write(crd_reference.render() if args.reference else crd.render())
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from .operator_main import main as operator_main

    return operator_main(args)


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    default_corpus = str(
        Path(TRAINER_DIR).parent.parent / "shared" / "data" / "tinyshakespeare.txt"
    )
    p = argparse.ArgumentParser(prog="autoresearch", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def workdir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--workdir",
            default="runs",
            help="where data, the git repo and org logs live (default: runs)",
        )

    def corpus(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--corpus", action="append", default=None,
                        help=f"text file or URL of text/parquet shards (repeatable; default {default_corpus})")  # fmt: skip
        sp.add_argument(
            "--vocab-size",
            type=int,
            default=None,
            help="BPE vocabulary size (prepare.py's default)",
        )

    r = sub.add_parser("run", help="run the orgs in an org.yaml locally; resumable after Ctrl-C")
    r.add_argument("org_yaml")
    workdir(r)
    corpus(r)
    r.add_argument("--org", action="append", help="only this org (repeatable)")
    r.add_argument(
        "--quick",
        action="store_true",
        help="CPU quick start: tiny profile, 15 s budget, 6 experiments",
    )
    r.add_argument("--profile", choices=["full", "tiny"], help="override spec.trainer.profile")
    r.add_argument("--time-budget", type=int, help="override spec.trainer.timeBudgetSeconds")
    r.add_argument("--max-experiments", type=int, help="override spec.budget.maxExperiments")
    r.add_argument("--proposer", choices=["auto", "org", "openai", "mutate"], default="org",
                   help="auto: openai when the API key is set, else mutate (default: as the org says)")  # fmt: skip
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--sandbox", default="auto", choices=["auto", "bwrap"],
                   help="how the harness isolates train.py (auto: the strongest available)")  # fmt: skip
    r.set_defaults(func=cmd_run)

    pr = sub.add_parser("prepare", help="tokenize a corpus into the workdir (idempotent)")
    workdir(pr)
    corpus(pr)
    pr.set_defaults(func=cmd_prepare)

    def cluster(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--org", action="append", help="only this org (repeatable)")
        sp.add_argument("--cluster", action="store_true",
                        help="read the ResearchOrgs' status from the current KUBECONFIG instead")  # fmt: skip
        sp.add_argument("-n", "--namespace",
                        help="with --cluster: this namespace (default: the context's)")  # fmt: skip
        sp.add_argument("-A", "--all-namespaces", action="store_true",
                        help="with --cluster: every namespace")  # fmt: skip

    c = sub.add_parser("compare", help="print orgs side by side")
    workdir(c)
    cluster(c)
    c.set_defaults(func=cmd_compare)

    pl = sub.add_parser(
        "plot", help="write a progress PNG: val_bpb per experiment and the running best"
    )
    workdir(pl)
    cluster(pl)
    pl.add_argument("--output", default="runs/progress.png")
    pl.set_defaults(func=cmd_plot)

    cr = sub.add_parser(
        "crd", help="print the ResearchOrg CustomResourceDefinition (generated from the spec)"
    )
    cr.add_argument("--reference", action="store_true",
                    help="print the markdown field reference instead (docs/crd-reference.md)")  # fmt: skip
    cr.set_defaults(func=cmd_crd)

    o = sub.add_parser(
        "operator", help="run the Kubernetes operator against the current KUBECONFIG"
    )
    o.add_argument("--verbose", action="store_true", help="log every kopf event and API call")
    o.set_defaults(func=cmd_operator)
    p.set_defaults(default_corpus=default_corpus)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "corpus", "unset") is None:
        args.corpus = [args.default_corpus]
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted; run the same command again to resume[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
