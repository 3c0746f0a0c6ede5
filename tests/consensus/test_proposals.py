from consensus import PendingProposals


def test_truncation_then_commit_then_leadership_loss() -> None:
    pending = PendingProposals[str]()
    for end, name in ((100, "a"), (200, "b"), (200, "b2"), (300, "c"), (400, "d")):
        pending.add(end, name)
    # A newer leader's log replaces everything after 200 and commits to 350 in one Ready:
    # c (ending at 300) is gone although 300 <= 350.
    assert pending.truncated(200) == ["c", "d"]
    assert pending.committed(350) == ["a", "b", "b2"]  # arrival order kept at equal ends
    assert len(pending) == 0
    pending.add(500, "e")
    assert pending.committed(499) == []
    assert pending.dropped() == ["e"] and len(pending) == 0
