from pathlib import Path

from autoresearch_operator.gitrepo import OrgRepo

BASE = "LR = 0.1\nDEPTH = 4\nWIDTH = 64\n"


def test_candidates_are_commits_under_tried_refs_and_only_keep_moves_the_branch(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    head = repo.ensure_branch("autoresearch/a")
    c1 = repo.commit_candidate("a", 1, head, BASE.replace("0.1", "0.2"), "raise LR")
    assert repo.branch_head("autoresearch/a") == head  # committing does not move the branch
    assert repo.tried("a", 1) == c1
    assert repo.message(c1) == "raise LR"
    assert repo.read_train_py(c1) == BASE.replace("0.1", "0.2")
    repo.advance("autoresearch/a", c1)
    assert repo.branch_head("autoresearch/a") == c1
    assert repo.repo.commit(c1).parents[0].hexsha == head


def test_commit_candidate_is_idempotent_per_experiment(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    head = repo.ensure_branch("autoresearch/a")
    first = repo.commit_candidate("a", 3, head, "X = 1\n", "first")
    again = repo.commit_candidate("a", 3, head, "X = 2\n", "second")
    assert again == first
    assert repo.tried_experiments("a") == {3: first}


def test_orgs_share_a_repository_without_touching_each_other(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    a = repo.ensure_branch("autoresearch/a")
    b = repo.ensure_branch("autoresearch/b")
    assert a == b  # both start at the baseline
    ca = repo.commit_candidate("a", 1, a, "A\n", "a1")
    repo.advance("autoresearch/a", ca)
    assert repo.branch_head("autoresearch/b") == b
    assert repo.tried_experiments("b") == {}
    # reopening finds the same baseline rather than making a new one
    again = OrgRepo.open_or_init(tmp_path / "repo", "something else\n")
    assert again.ensure_branch("autoresearch/c") == a


def test_merge_onto_rebases_independent_changes_and_refuses_conflicts(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    base = repo.ensure_branch("autoresearch/a")
    kept = repo.commit_candidate("a", 1, base, BASE.replace("LR = 0.1", "LR = 0.3"), "LR")
    merged = repo.merge_onto(base, BASE.replace("WIDTH = 64", "WIDTH = 128"), kept)
    assert merged == "LR = 0.3\nDEPTH = 4\nWIDTH = 128\n"
    assert repo.merge_onto(base, BASE.replace("LR = 0.1", "LR = 0.05"), kept) is None
