"""The warm worker's shared reads of deployments and flows (no server: a counting reader)."""

import asyncio

import pytest

from interlinked.workers.warm import RecentReads


class Reader:
    def __init__(self, fail_first: bool = False):
        self.calls: list[str] = []
        self.fail_first = fail_first

    async def __call__(self, object_id: str) -> dict:
        self.calls.append(object_id)
        await asyncio.sleep(0.01)
        if self.fail_first and len(self.calls) == 1:
            raise LookupError(f"{object_id} not found")
        return {"id": object_id, "read": len(self.calls)}


def test_reads_close_together_share_one_request_and_old_ones_are_read_again():
    async def scenario():
        now = [0.0]
        reader = Reader()
        reads = RecentReads(reader, seconds=1.0, clock=lambda: now[0])
        together = await asyncio.gather(*(reads("d1") for _ in range(5)), reads("d2"))
        assert [r["read"] for r in together[:5]] == [together[0]["read"]] * 5
        assert sorted(reader.calls) == ["d1", "d2"]
        now[0] = 0.9
        assert (await reads("d1"))["read"] == together[0]["read"]  # still recent
        now[0] = 1.5
        assert (await reads("d1"))["read"] == 3  # too old: read again
        assert reader.calls == ["d1", "d2", "d1"]

    asyncio.run(scenario())


def test_a_failed_read_is_not_kept():
    async def scenario():
        reader = Reader(fail_first=True)
        reads = RecentReads(reader, seconds=60.0, clock=lambda: 0.0)
        with pytest.raises(LookupError):
            await reads("gone")
        assert (await reads("gone"))["read"] == 2
        assert reader.calls == ["gone", "gone"]

    asyncio.run(scenario())
