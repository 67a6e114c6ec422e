"""What tests share beyond the server fixtures: waiting on a condition with a deadline
(:func:`wait_for`), waiting for mirror targets to be Synced (:func:`wait_synced`), and
reading object stores with the vendor SDKs directly (:class:`RawStore`)."""
from tests.support.mirrors import cli_status, wait_synced
from tests.support.raw_store import RawStore
from tests.support.waiting import holds_for, wait_for, wait_still

__all__ = ["RawStore", "cli_status", "holds_for", "wait_for", "wait_still", "wait_synced"]
