"""The cache's ledger of drops and lock releases owed to Redis (no I/O): a notice that arrives
while a payment is under way survives that payment."""

from __future__ import annotations

from docstore.ephemeral.owed import Owed


def test_a_document_noticed_again_during_a_drop_stays_owed() -> None:
    owed = Owed(max_documents=10)
    owed.documents([1, 2])
    debt = owed.take()
    owed.documents([2])  # changed again while the DEL of the first notice is on its way
    owed.paid(debt, [1, 2])
    assert owed.take().documents.keys() == {2}
    assert owed.pending() == 1


def test_a_notice_during_a_drop_of_everything_stays_owed() -> None:
    owed = Owed(max_documents=2)
    owed.documents([1, 2, 3])  # past the bound: folded into a drop of everything
    assert owed.take().everything and owed.pending() == 3
    debt = owed.take()
    owed.everything()  # a change of unknown documents while the SCAN runs
    owed.documents([4])
    owed.paid_everything(debt)
    after = owed.take()
    assert after.everything and after.documents.keys() == {4}
    owed.paid_everything(after)
    assert not owed.any() and owed.pending() == 0


def test_locks_to_release_are_bounded_and_forgotten_once_released() -> None:
    owed = Owed(max_documents=10)
    for n in range(1500):
        owed.lock(f"lock-{n}", "token")
    locks = owed.locks()
    assert len(locks) == 1000 and locks[0] == ("lock-500", "token")
    owed.released(locks)
    assert not owed.any()
