"""`autoresearch`: run research orgs and contests locally, compare them, plot them."""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from . import report
from .contest_spec import Contest, load_contest
from .core.gitrepo import CredentialsUnavailable, OrgRepo, PushCredentials
from .core.journal import Journal
from .core.loop import BaselineFailed, ResearchLoop, budget_exhausted, reconcile
from .executor import TRAINER_DIR, LocalExecutor, baseline_train_py
from .proposers import ProposerConfigError, make_proposer
from .report import org_dir
from .spec import BudgetSpec, Org, OrgSpecError, ProposerSpec, TrainerSpec, load_orgs

P = TypeVar("P", bound=ProposerSpec)  # an org's proposer, or a contest's meta-proposer


def _piped_width(environ: Mapping[str, str]) -> int:
    """Piped output (CI logs, `| tee`) is at least 160 columns wide, so the comparison table keeps
    its names on one line even under a shell's COLUMNS=80; wider when COLUMNS asks for it."""
    columns = environ.get("COLUMNS", "")
    return max(160, int(columns)) if columns.isdigit() else 160


console = Console(width=None if sys.stdout.isatty() else _piped_width(os.environ))


# -- workdir layout -------------------------------------------------------------------------


def data_dir(workdir: Path) -> Path:
    return workdir / "data"


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


def _override_terms(
    trainer: TrainerSpec, budget: BudgetSpec, args: argparse.Namespace, quick_experiments: int
) -> tuple[TrainerSpec, BudgetSpec]:
    """--quick (tiny profile, 15 s budget, few experiments), --profile, --time-budget,
    --max-experiments."""
    update = {"profile": args.profile or ("tiny" if args.quick else None),
              "timeBudgetSeconds": args.time_budget or (15 if args.quick else None)}  # fmt: skip
    experiments = args.max_experiments or (quick_experiments if args.quick else None)
    return (
        trainer.model_copy(update={k: v for k, v in update.items() if v is not None}),
        budget.model_copy(update={"maxExperiments": experiments or budget.maxExperiments}),
    )


def _override_proposer(who: str, proposer: P, choice: str, offline: str = "mutate") -> P:
    """--proposer: mutate (`offline`), or auto (openai when its API key is set, else `offline`),
    or openai."""
    has_key = bool(os.environ.get(proposer.apiKeyEnv))
    if choice == "mutate" or (choice == "auto" and not has_key):
        if proposer.type == "openai":
            console.print(
                f"[yellow]{who}: ${proposer.apiKeyEnv} is not set; using the offline {offline} proposer[/]"
            )
        return proposer.model_copy(update={"type": offline})
    if choice in ("auto", "openai") and has_key:
        return proposer.model_copy(
            update={
                "type": "openai",
                "model": proposer.model or os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
                "baseURL": proposer.baseURL or os.environ.get("OPENAI_BASE_URL"),
            }
        )
    return proposer


def _apply_overrides(org: Org, args: argparse.Namespace) -> Org:
    trainer, budget = _override_terms(org.spec.trainer, org.spec.budget, args, 6)
    proposer = _override_proposer(org.name, org.spec.proposer, args.proposer)
    new_spec = org.spec.model_copy(
        update={"trainer": trainer, "budget": budget, "proposer": proposer}
    )
    return org.model_copy(update={"spec": new_spec})


def _apply_contest_overrides(contest: Contest, args: argparse.Namespace) -> Contest:
    """The overrides change the shared terms, so every entrant gets them alike."""
    spec = contest.spec
    trainer, budget = _override_terms(spec.terms.trainer, spec.terms.budget, args, 4)
    entrants = [e.model_copy(update={"proposer": _override_proposer(e.name, e.proposer, args.proposer)})
                for e in spec.entrants]  # fmt: skip
    meta = _override_proposer("meta", spec.meta.proposer, args.proposer, offline="evolve")
    terms = spec.terms.model_copy(update={"trainer": trainer, "budget": budget})
    update = {"terms": terms, "entrants": entrants, "rounds": args.rounds or spec.rounds,
              "meta": spec.meta.model_copy(update={"proposer": meta})}  # fmt: skip
    return contest.model_copy(update={"spec": spec.model_copy(update=update)})


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


def cmd_contest(args: argparse.Namespace) -> int:
    from .contest_local import LocalContest
    from .display import ContestDisplay, print_contest
    from .proposers.meta_openai import make_meta_proposer

    workdir = Path(args.workdir)
    try:
        contest, programs = load_contest(Path(args.contest_yaml))
        contest = _apply_contest_overrides(contest, args)
        meta = make_meta_proposer(contest.spec.meta.proposer)
        for entrant in contest.spec.entrants:  # a missing API key fails now, not rounds later
            make_proposer(entrant.proposer.model_dump())
    except (OrgSpecError, ProposerConfigError) as err:
        console.print(f"[red]{err}[/]" + (" (or run with --proposer mutate)" if isinstance(err, ProposerConfigError) else ""))  # fmt: skip
        return 2
    data = ensure_prepared(workdir, args.corpus, args.vocab_size)
    repo = OrgRepo.open_or_init(workdir / "repo", baseline_train_py())
    local = LocalContest(
        contest, programs, workdir, repo,
        executor=lambda folder: LocalExecutor(data, folder, device=args.device, sandbox=args.sandbox),
        proposer=lambda org: make_proposer(org.spec.proposer.model_dump()),
        meta=meta, observer=ContestDisplay(console, contest.name),
    )  # fmt: skip
    try:
        status = local.run()
    except BaselineFailed as err:
        console.print(f"[red]{err}[/]\nfix the cause and run the same command again; it retries "
                      "the baseline", highlight=False)  # fmt: skip
        return 1
    print_contest(console, contest.name, status)
    console.print(f"status {report.contest_status_file(workdir, contest.name)}, programs on "
                  f"branch {status['programsBranch']} in {repo.path}")  # fmt: skip
    return 0


# -- compare / plot -----------------------------------------------------------------------------


def _contest_status(args: argparse.Namespace) -> dict:
    """The status of contest --contest: the ResearchContest's with --cluster, else status.json."""
    if args.cluster:
        from .cluster_report import load_contest

        return load_contest(args.contest, args.namespace).get("status") or {}
    return report.load_contest_status(Path(args.workdir), args.contest)


def cmd_compare(args: argparse.Namespace) -> int:
    from .display import print_comparison, print_contest

    if args.contest:
        print_contest(console, args.contest, _contest_status(args))
        return 0
    if args.cluster:
        from .cluster_report import cluster_orgs, org_label, summary_from_org

        orgs = cluster_orgs(args.namespace, args.all_namespaces, args.org)
        summaries = [summary_from_org(o, org_label(o, args.all_namespaces)) for o in orgs]
        title = "research orgs (ResearchOrg status)"
    else:
        records = report.load_all(report.orgs_dir(Path(args.workdir)), args.org)
        if not records:
            raise report.NothingToReport(f"no orgs with experiments under {args.workdir}/orgs")
        summaries = [report.summarize(o, r) for o, r in records.items()]
        title = "research orgs"
    print_comparison(console, summaries, title)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    titles = None
    if args.contest and args.cluster:
        from .cluster_report import contest_curves, load_orgs

        status = _contest_status(args)
        curves = contest_curves(status, load_orgs(args.namespace, contest=args.contest))
        out = report.plot_contest(curves, status, Path(args.output), args.contest)
    elif args.contest:
        status = _contest_status(args)
        curves = report.local_contest_curves(status, Path(args.workdir))
        out = report.plot_contest(curves, status, Path(args.output), args.contest)
    elif args.cluster:
        from .cluster_report import cluster_orgs, plot_inputs

        orgs = cluster_orgs(args.namespace, args.all_namespaces, args.org)
        records, titles = plot_inputs(orgs, args.all_namespaces)
        out = report.plot_progress(records, Path(args.output), titles=titles)
    else:
        records = report.load_all(report.orgs_dir(Path(args.workdir)), args.org)
        out = report.plot_progress(records, Path(args.output))
    console.print(f"wrote {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    ensure_prepared(Path(args.workdir), args.corpus, args.vocab_size)
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from . import crd, crd_contest, crd_reference

    if args.reference:
        sys.stdout.write(crd_reference.render(args.kind))
    else:
        sys.stdout.write(crd_contest.render() if args.kind == "contest" else crd.render())
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
        sp.add_argument("--workdir", default="runs",
                        help="where data, the git repo and org logs live (default: runs)")  # fmt: skip

    def corpus(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--corpus", action="append", default=None,
                        help=f"text file or URL of text/parquet shards (repeatable; default {default_corpus})")  # fmt: skip
        sp.add_argument("--vocab-size", type=int, default=None,
                        help="BPE vocabulary size (prepare.py's default)")  # fmt: skip

    def training(sp: argparse.ArgumentParser, where: str, experiments: int, own: str) -> None:
        """What `run` and `contest` share: the data, the overrides of `where`, the machine."""
        workdir(sp)
        corpus(sp)
        sp.add_argument("--quick", action="store_true",
                        help=f"CPU quick start: tiny profile, 15 s budget, {experiments} experiments")  # fmt: skip
        sp.add_argument("--profile", choices=["full", "tiny"], help=f"override {where}trainer.profile")  # fmt: skip
        sp.add_argument("--time-budget", type=int, help=f"override {where}trainer.timeBudgetSeconds")  # fmt: skip
        sp.add_argument("--max-experiments", type=int, help=f"override {where}budget.maxExperiments")  # fmt: skip
        sp.add_argument("--proposer", choices=["auto", own, "openai", "mutate"], default=own,
                        help=f"auto: openai when the API key is set, else mutate (default: as the {own} says)")  # fmt: skip
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--sandbox", default="auto", choices=["auto", "bwrap"],
                        help="how the harness isolates train.py (auto: the strongest available)")  # fmt: skip

    r = sub.add_parser("run", help="run the orgs in an org.yaml locally; resumable after Ctrl-C")
    r.add_argument("org_yaml")
    training(r, "spec.", 6, "org")
    r.add_argument("--org", action="append", help="only this org (repeatable)")
    r.set_defaults(func=cmd_run)

    ct = sub.add_parser("contest", help="run a contest.yaml locally, entrants taking turns; resumable")  # fmt: skip
    ct.add_argument("contest_yaml")
    training(ct, "spec.terms.", 4, "entrant")
    ct.add_argument("--rounds", type=int, help="override spec.rounds")
    ct.set_defaults(func=cmd_contest)

    pr = sub.add_parser("prepare", help="tokenize a corpus into the workdir (idempotent)")
    workdir(pr)
    corpus(pr)
    pr.set_defaults(func=cmd_prepare)

    def cluster(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--org", action="append", help="only this org (repeatable)")
        sp.add_argument("--contest", help="a contest's rounds instead (status.json, or with --cluster its ResearchContest)")  # fmt: skip
        sp.add_argument("--cluster", action="store_true",
                        help="read the ResearchOrgs' status from the current KUBECONFIG instead")  # fmt: skip
        sp.add_argument("-n", "--namespace",
                        help="with --cluster: this namespace (default: the context's)")  # fmt: skip
        sp.add_argument("-A", "--all-namespaces", action="store_true",
                        help="with --cluster: every namespace")  # fmt: skip

    c = sub.add_parser("compare", help="print orgs side by side, or a contest's standings")
    workdir(c)
    cluster(c)
    c.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plot", help="write a progress PNG: val_bpb per experiment and the running best; "
                        "with --contest, each entrant's running best against GPU time")  # fmt: skip
    workdir(pl)
    cluster(pl)
    pl.add_argument("--output", default="runs/progress.png")
    pl.set_defaults(func=cmd_plot)

    cr = sub.add_parser("crd", help="print a CustomResourceDefinition (generated from the spec)")
    cr.add_argument("--kind", choices=["org", "contest"], default="org",
                    help="ResearchOrg (default) or ResearchContest")  # fmt: skip
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
    from .cluster_report import ClusterReadError

    try:
        return int(args.func(args))
    except (ClusterReadError, report.NothingToReport) as err:
        console.print(f"[red]{err}[/]")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted; run the same command again to resume[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
