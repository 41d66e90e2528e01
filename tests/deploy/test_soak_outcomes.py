"""How ``bench/soak_clients`` names the end of a gRPC call: the soak test's verdicts rest on these outcomes."""

from __future__ import annotations

import grpc

from bench.soak_clients import CUT, DEADLINE, REJECTED, at_deadline, classify_grpc


def test_cancelled_at_the_deadline_is_the_deadline_not_a_cut() -> None:
    cut = classify_grpc(grpc.StatusCode.CANCELLED, "CANCELLED", ())
    assert cut.outcome == CUT
    # the server's deadline RST_STREAM read before the client's own timer: the call still ran its whole deadline
    assert at_deadline(cut, elapsed_s=0.2501, timeout_s=0.25).outcome == DEADLINE
    # the server's deadline dated from its cached clock: a few ms early is still the deadline
    assert at_deadline(cut, elapsed_s=0.245, timeout_s=0.25).outcome == DEADLINE
    # well before the deadline a CANCELLED is a call the server's gRPC layer cut: still an error, and its detail
    # says when it came
    early = at_deadline(cut, elapsed_s=0.1, timeout_s=0.25)
    assert early.outcome == CUT and early.detail == "CANCELLED after 100 ms (deadline 250 ms)"
    # "Cancelling all calls" is the server stopping, whenever it comes
    stopping = classify_grpc(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls", ())
    assert at_deadline(stopping, elapsed_s=1.0, timeout_s=0.25).outcome == CUT
    hinted = classify_grpc(grpc.StatusCode.UNAVAILABLE, "busy", (("retry-after", "1"),))
    assert at_deadline(hinted, elapsed_s=1.0, timeout_s=0.25).outcome == REJECTED
