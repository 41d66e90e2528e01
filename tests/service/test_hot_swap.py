"""Models that change without downtime, end to end on a real server: closed-loop clients (REST and OIP over gRPC)
keep sending while a new version is dropped into the repository (poll mode) or loaded and another model unloaded
(explicit mode). No request fails, the answers switch to the new version within the poll interval (plus its load
time) and never back, the old version's unit and predictors are freed, and a corrupt version is refused while the
serving one goes on."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.service.conftest import server_settings
from tests.service.servers import ServerThread

POLL_S = 0.5


def publish(source: Path, repo: Path, model: str, version: str, *, corrupt: bool = False) -> None:
    """Copy a bundle in as ``repo/model/version``: written hidden, then renamed (what export --repository does)."""
    staged = repo / model / f".{version}.partial"
    shutil.copytree(source, staged)
    if corrupt:
        with open(staged / "model.onnx", "ab") as f:
            f.write(b"\0")  # the sha256 in meta.json no longer matches
    staged.rename(repo / model / version)


@dataclass
class ClosedLoop:
    """One client sending requests back to back on its own thread: ``(start_s, status, model_version)`` each."""

    send: object  # () -> (status, version)
    answers: list[tuple[float, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                status, version = self.send()
            except Exception as exc:  # a failed request is an answer too: the test counts it
                status, version = f"{type(exc).__name__}: {exc}", ""
            self.answers.append((start, status, version))

    def finish(self) -> list[tuple[float, str, str]]:
        self.stop.set()
        self.thread.join(30)
        return self.answers


def rest_client(server: ServerThread, jpeg: bytes) -> ClosedLoop:
    client = httpx.Client(base_url=server.http_url, timeout=30)

    def send() -> tuple[str, str]:
        response = client.post("/v1/models/tiny/detect", content=jpeg, headers={"content-type": "image/jpeg"})
        return str(response.status_code), response.json().get("model_version", "")

    return ClosedLoop(send)


def oip_grpc_client(server: ServerThread, jpeg: bytes) -> ClosedLoop:
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    tensor = triton_grpc.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([jpeg], dtype=object))

    def send() -> tuple[str, str]:
        return "200", client.infer("tiny", [tensor], client_timeout=30).get_response().model_version

    return ClosedLoop(send)


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def states(server: ServerThread) -> dict[tuple[str, str], tuple[str, str]]:
    index = httpx.post(server.http_url + "/v2/repository/index").json()
    return {(m["name"], m["version"]): (m["state"], m["reason"]) for m in index}


def runtime_refs(server: ServerThread, model: str, version: str) -> list[weakref.ref]:
    """Weak references to a served version's unit and each predictor (instances and the latency instance)."""
    unit = server.engine._registry.route(model, version)
    workers = [w for w in (*unit.pool.workers, unit.latency) if w is not None]
    return [weakref.ref(unit), *(weakref.ref(w.predictor) for w in workers)]


def assert_freed(refs: list[weakref.ref]) -> None:
    for _ in range(50):  # the server's loop thread may still hold a frame for a moment
        gc.collect()
        if all(ref() is None for ref in refs):
            return
        time.sleep(0.1)
    raise AssertionError(f"still referenced: {[ref() for ref in refs if ref() is not None]}")


def assert_switched_once(answers: list[tuple[float, str, str]], old: str, new: str) -> float:
    """Every answer a success, the old version's answers then only the new one's; returns when the first new one
    was sent."""
    assert answers and all(status == "200" for _, status, _ in answers), {a[1] for a in answers} - {"200"}
    versions = [version for _, _, version in answers]
    first_new = versions.index(new)
    assert set(versions[:first_new]) == {old} and set(versions[first_new:]) == {new}, versions
    return answers[first_new][0]


def test_a_version_dropped_into_the_repository_takes_over_without_a_failed_request(tiny_bundle, tmp_path, jpeg):
    repo = tmp_path / "repo"
    publish(tiny_bundle, repo, "tiny", "1")
    settings = server_settings(
        tiny_bundle, bundles=[], model_repository=repo, model_control="poll", repository_poll_s=POLL_S
    )
    with ServerThread(settings) as server:
        old = runtime_refs(server, "tiny", "1")
        clients = [rest_client(server, jpeg), oip_grpc_client(server, jpeg)]
        time.sleep(0.5)
        dropped = time.monotonic()
        publish(tiny_bundle, repo, "tiny", "2")
        wait_for(lambda: states(server).get(("tiny", "1"), ("",))[0] == "UNAVAILABLE")
        load_s = next(s.load_seconds for s in server.engine.model_states() if s.version == "2")
        publish(tiny_bundle, repo, "tiny", "3", corrupt=True)
        wait_for(lambda: ("tiny", "3") in states(server))
        time.sleep(3 * POLL_S)  # more polls: the same corrupt files are not retried, version 2 keeps serving
        answers = [client.finish() for client in clients]
        index = states(server)
        metrics = httpx.get(server.http_url + "/metrics").text
    for client_answers in answers:
        switched = assert_switched_once(client_answers, "1", "2")
        # Seen by the next poll (at most POLL_S away), loaded beside the old version, then switched to.
        assert switched - dropped < POLL_S + load_s + 1.0, (switched - dropped, load_s)
        assert client_answers[-1][0] - switched > 3 * POLL_S  # and v2 served on while v3 was refused
    assert index[("tiny", "1")] == ("UNAVAILABLE", "unloaded") and index[("tiny", "2")] == ("READY", "")
    assert index[("tiny", "3")][0] == "UNAVAILABLE" and "sha256 mismatch" in index[("tiny", "3")][1]
    assert 'nv_inference_request_success{model="tiny",version="2"}' in metrics
    assert 'version="1"' not in metrics  # an unloaded version's series go with it
    assert_freed(old)


def test_explicit_load_and_unload_while_clients_keep_sending(tiny_bundle, tmp_path, jpeg):
    repo = tmp_path / "repo"
    publish(tiny_bundle, repo, "tiny", "1")
    publish(tiny_bundle, repo, "spare", "1")
    settings = server_settings(
        tiny_bundle, bundles=[], model_repository=repo, model_control="explicit", load_models=["*"]
    )
    with ServerThread(settings) as server:
        control = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)
        old, spare = runtime_refs(server, "tiny", "1"), runtime_refs(server, "spare", "1")
        clients = [rest_client(server, jpeg), oip_grpc_client(server, jpeg)]
        time.sleep(0.5)
        publish(tiny_bundle, repo, "tiny", "2")
        control.load_model("tiny")  # returns once version 2 serves
        loaded = time.monotonic()
        control.unload_model("spare")
        assert not control.is_model_ready("spare")
        wait_for(lambda: states(server)[("tiny", "1")][0] == "UNAVAILABLE")
        wait_for(lambda: states(server)[("spare", "1")][0] == "UNAVAILABLE")
        time.sleep(0.3)
        answers = [client.finish() for client in clients]
        assert control.is_model_ready("tiny", "2") and not control.is_model_ready("tiny", "1")
        control.close()
    for client_answers in answers:
        assert_switched_once(client_answers, "1", "2")
        assert all(version == "2" for start, _, version in client_answers if start > loaded)  # switched in the call
    assert_freed(old)
    assert_freed(spare)
