"""`mgc serve`: the real Serve application on the session's Ray head, answered over real HTTP
(requests, and http.client for paths no client would normalise), its page driven in headless
chromium over the DevTools protocol, a replica killed under load and replaced."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import _free_port, wait_for_free_cpus

from mgc import label, recommend
from mgc.cli import main
from mgc.errors import MgcError
from mgc.serve import ServeConfig

MAX_UPLOAD_MB = 8.0


@pytest.fixture
def _cpus_free_after_each_test():
    """conftest's check that every CPU is free after each test, held until the module's end: the
    served replica keeps its CPU between tests, and `served` gives it back (and checks) at the end."""
    yield


@pytest.fixture(scope="module")
def served(ray_connected, model, catalogue):
    """`mgc serve` of the session's cnn and its catalogue on the session's head (`app.start`, what
    the command runs), with a token; shut down at the end, every CPU free again."""
    from ray import serve

    from mgc.serve import app

    token = secrets.token_hex(16)
    cfg = ServeConfig(model=model, catalogue=str(catalogue), port=_free_port(), token=token, max_seconds=60,
                      max_upload_mb=MAX_UPLOAD_MB, max_batch_size=8, batch_wait_s=0.05)  # fmt: skip
    client = requests.Session()
    client.headers["Authorization"] = f"Bearer {token}"
    try:
        yield {"url": app.start(cfg).rstrip("/"), "token": token, "cfg": cfg, "http": client}
    finally:
        serve.shutdown()
        wait_for_free_cpus(120, after="serve.shutdown()")


def _rows(labelled, folder) -> pd.DataFrame:
    """`mgc label`'s rows of the inbox (the `labelled` fixture: the same model, --max-seconds 60), by file."""
    rows = label.read_labels(str(labelled))
    return rows.assign(file=[os.path.relpath(p, folder) for p in rows["path"]]).set_index("file")


def _post(served, route: str, data: bytes, **params) -> requests.Response:
    return served["http"].post(served["url"] + route, data=data, params=params, timeout=120)


def test_health_is_open_and_every_other_route_needs_the_token(served):
    url, token = served["url"], served["token"]
    assert requests.get(url + "/health", timeout=30).json()["status"] == "ok"
    for method, route in [("GET", "/"), ("GET", "/model"), ("GET", "/map"), ("POST", "/label"), ("POST", "/similar"),
                          ("GET", "/similar?track_id=1"), ("GET", "/audio/1")]:  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            answer = requests.request(method, url + route, headers=headers, data=b"x", timeout=30)
            assert answer.status_code == 401 and answer.json()["reason"] == "unauthorised", (route, headers)
    assert requests.get(url + "/model", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    # The page's own link: ?token= on / sets the cookie its fetches and players then carry.
    browser = requests.Session()
    assert browser.get(url + "/", params={"token": token}, timeout=30).status_code == 200
    assert browser.get(url + "/model", timeout=30).status_code == 200
    assert requests.get(url + "/?token=wrong", timeout=30).status_code == 401


def test_the_model_route_describes_the_artifact(served, model):
    from mgc import artifact

    network, meta = artifact.load(model)
    got = served["http"].get(served["url"] + "/model", timeout=30).json()
    assert got["classes"] == list(meta["labels"]) and got["temperature"] == pytest.approx(meta["temperature"])
    assert got["inputs"] == list(network.cfg.inputs) and got["model_id"] == label.model_id(model)
    assert got["catalogue_tracks"] == len(recommend.load_catalogue(str(served["cfg"].catalogue) + "/catalogue.parquet"))


def test_an_upload_gets_the_row_mgc_label_gives_the_same_file(served, labelled, inbox):
    """Every good upload of the inbox (4 formats, 4 rates, mono and stereo, a 2-minute file cut at
    60 s) answered as `mgc label` labelled it: probabilities to 1e-4, the same top genres, flags,
    segments, durations and model."""
    folder, truth = inbox
    expected = _rows(labelled, folder)
    for file in truth.loc[truth["status"] == "ok", "file"]:
        answer = _post(served, "/label", (folder / file).read_bytes(), name=file)
        assert answer.status_code == 200, (file, answer.text)
        got, want = answer.json(), expected.loc[file]
        assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-4), file
        assert np.allclose(got["embedding"], want["embedding"], atol=1e-4), file
        shared = min(len(got["top_genres"]), len(want["top_genres"]))  # --top-k: serve's 5, the fixture's 3
        assert got["top_genres"][:shared] == list(want["top_genres"][:shared]), file
        for key in ("uncertain", "n_segments", "model_id", "content_hash", "status"):
            assert got[key] == want[key], (file, key)
        for key in ("agreement", "analysed_s", "duration_s"):
            assert got[key] == pytest.approx(want[key], abs=1e-4), (file, key)
    long = _post(served, "/label", (folder / "long/long_mix.flac").read_bytes()).json()
    assert long["analysed_s"] == pytest.approx(60.0) and long["duration_s"] == pytest.approx(120.0)


def test_concurrent_uploads_share_forward_passes_and_each_gets_its_own_row(served, labelled, inbox):
    folder, truth = inbox
    expected = _rows(labelled, folder)
    files = list(truth.loc[truth["status"] == "ok", "file"])[:12]
    before = requests.get(served["url"] + "/health", timeout=30).json()
    answers: dict[str, dict] = {}

    def send(file):
        answers[file] = _post(served, "/label", (folder / file).read_bytes()).json()

    threads = [threading.Thread(target=send, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for file in files:
        assert np.allclose(answers[file]["probabilities"], expected.loc[file, "probabilities"], atol=1e-4), file
    after = requests.get(served["url"] + "/health", timeout=30).json()
    uploads, batches = after["uploads"] - before["uploads"], after["batches"] - before["batches"]
    assert uploads == len(files) and batches < uploads, (uploads, batches)


def test_similar_tracks_of_an_upload_and_of_a_catalogue_track(served, inbox, catalogue):
    folder, truth = inbox
    frame = recommend.load_catalogue(str(catalogue / "catalogue.parquet"))
    file = truth.loc[truth["status"] == "ok", "file"].iloc[0]
    answer = _post(served, "/similar", (folder / file).read_bytes(), k=5)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    want = recommend.similar(frame, np.asarray(got["label"]["embedding"], np.float32), 5)
    assert [s["id"] for s in got["similar"]] == list(want["id"])
    assert np.allclose([s["score"] for s in got["similar"]], want["score"], atol=1e-3)
    assert all(s["genre"] == g and s["audio"] for s, g in zip(got["similar"], want["genre"]))
    assert len(got["map"]) == 2 and np.isfinite(got["map"]).all()

    track = str(frame["id"].iloc[3])
    by_id = served["http"].get(served["url"] + "/similar", params={"track_id": track, "k": 4}, timeout=30).json()
    want = recommend.similar(frame, np.asarray(frame["embedding"].iloc[3], np.float32), 4, exclude_id=track)
    assert by_id["track"]["id"] == track and [s["id"] for s in by_id["similar"]] == list(want["id"])
    for params in ({"track_id": "no-such-track"}, {"track_id": "../1"}):
        missing = served["http"].get(served["url"] + "/similar", params=params, timeout=30)
        assert missing.status_code == 404 and missing.json()["reason"] == "unknown_track"
    bad_k = served["http"].get(served["url"] + "/similar", params={"track_id": track, "k": 0}, timeout=30)
    assert bad_k.status_code == 422 and bad_k.json()["reason"] == "bad_request"


def _raw_get(served, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client normalises `..` or decodes `%2e` on the way)."""
    where = urlsplit(served["url"])
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {served['token']}"})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_audio_serves_only_the_catalogues_own_files(served, catalogue, features):
    from mgc import manifest

    frame = recommend.load_catalogue(str(catalogue / "catalogue.parquet"))
    paths = manifest.read(str(features / "_manifest.parquet")).tracks.set_index("track_id")["path"]
    track = frame["id"].iloc[0]
    status, body = _raw_get(served, f"/audio/{track}")
    assert status == 200 and body == open(paths.loc[int(track)], "rb").read()
    secret = paths.loc[int(track)]  # a real file, but named by its path, not by a catalogue id
    for path in ["/audio/../../../../etc/passwd", "/audio/..%2f..%2f..%2f..%2fetc%2fpasswd",
                 "/audio/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/audio/%2e%2e/%2e%2e/etc/passwd",
                 "/audio/..%5c..%5cetc%5cpasswd", f"/audio/{secret}", f"/audio/{track}/../{track}",
                 "/audio/%00", "/audio/999999999", "/audio/"]:  # fmt: skip
        status, body = _raw_get(served, path)
        assert status == 404 and b"root:" not in body and b"ID3" not in body[:3], (path, status, body[:200])


def _silence_and_a_blip(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "silent.wav", np.zeros(22050 * 6, np.float32), 22050)
    sf.write(tmp_path / "blip.wav", (0.3 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32), 22050)
    return (tmp_path / "silent.wav").read_bytes(), (tmp_path / "blip.wav").read_bytes()


def test_every_bad_upload_is_a_4xx_with_its_reason_and_the_replica_lives_on(served, inbox, tmp_path):
    folder, truth = inbox
    pid = requests.get(served["url"] + "/health", timeout=30).json()["pid"]
    silent, blip = _silence_and_a_blip(tmp_path)
    cases = [(b"", 400, "empty"), (b"not audio at all" * 100, 422, "decode_error"), (silent, 422, "silent"),
             (blip, 422, "too_short"), (b"\0" * int((MAX_UPLOAD_MB + 1) * 2**20), 413, "too_large")]  # fmt: skip
    # The inbox's broken files, with the reason `mgc label` gives each (its empty file is a request without a body here).
    for file, reason in truth.loc[truth["status"] == "error", ["file", "reason"]].values:
        data = (folder / file).read_bytes()
        cases.append((data, 422, reason) if data else (data, 400, "empty"))
    for route in ("/label", "/similar"):
        for data, status, reason in cases:
            answer = _post(served, route, data)
            assert answer.status_code == status and answer.json()["reason"] == reason, (
                route,
                reason,
                answer.text[:300],
            )
    assert requests.get(served["url"] + "/health", timeout=30).json()["pid"] == pid  # no replica crashed


def test_the_listening_page_in_chromium(served, inbox, catalogue, tmp_path):
    """Headless chromium opens the page (its ?token= link), a file is chosen in its file input:
    its genres appear as bars, then the similar tracks, whose first <audio> loads (duration > 0),
    and the upload is placed on the catalogue's map beside every track."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    folder, truth = inbox
    upload = folder / truth.loc[truth["status"] == "ok", "file"].iloc[0]
    tracks = len(recommend.load_catalogue(str(catalogue / "catalogue.parquet")))
    with _chromium(browser, tmp_path) as page:
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{served['url']}/?token={served['token']}")
        page.wait("document.body && document.body.dataset.ready === '1'", 60)
        assert page.eval("document.querySelectorAll('#map circle.track').length") == tracks
        root = page.call("DOM.getDocument")["root"]["nodeId"]
        node = page.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        page.call("DOM.setFileInputFiles", nodeId=node, files=[str(upload)])
        page.wait("document.querySelectorAll('#similar li').length > 0", 120)
        seen = page.eval(
            "JSON.stringify({bars: [...document.querySelectorAll('#tags .tag')].map(t => [t.querySelector('.name')"
            ".textContent, parseFloat(t.querySelector('.bar').style.width)]), similar: document.querySelectorAll("
            "'#similar li').length, status: document.getElementById('status').textContent,"
            "upload: document.querySelectorAll('#map .upload').length})"
        )
        seen = json.loads(seen)
        assert seen["similar"] == 10 and seen["upload"] == 1 and seen["status"].endswith("done"), seen
        assert len(seen["bars"]) == served["cfg"].top_k and all(w > 0 for _, w in seen["bars"][:1]), seen
        duration = page.wait("(document.querySelector('#similar audio') || {}).duration > 0 && "
                             "document.querySelector('#similar audio').duration", 60)  # fmt: skip
        assert duration > 1, duration
        print(f"page: {seen}, first similar track playable: {duration:.1f} s")


class _Page:
    """One page of chromium over the DevTools protocol (websocket-client)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws, self.next_id = websocket.create_connection(ws_url, timeout=60, suppress_origin=True), 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.25)
        state = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''")
        pytest.fail(f"not within {timeout} s: {expression}\npage: {state}")


@contextlib.contextmanager
def _chromium(browser: str, tmp_path):
    """Headless chromium with a DevTools port, and its one page; ended with its process group."""
    port = _free_port()
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
           "--remote-allow-origins=*", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
           f"--user-data-dir={tmp_path / 'profile'}", "about:blank"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, pages = time.time() + 60, []
        while not pages:
            assert time.time() < deadline and proc.poll() is None, "chromium did not open its DevTools port"
            with contextlib.suppress(requests.RequestException):
                pages = [
                    p for p in requests.get(f"http://127.0.0.1:{port}/json", timeout=5).json() if p["type"] == "page"
                ]
            time.sleep(0.2)
        page = _Page(pages[0]["webSocketDebuggerUrl"])
        try:
            yield page
        finally:
            page.ws.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_command_writes_a_serve_config_and_refuses_an_open_host_without_a_token(model, catalogue, tmp_path, capsys):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from mgc.serve import app

    path = tmp_path / "serve.yaml"
    assert main(["serve", "--model", model, "--catalogue", str(catalogue), "--port", "8123", "--replicas", "3",
                 "--min-replicas", "1", "--upscale-delay-s", "5", "--downscale-delay-s", "60",
                 "--write-config", str(path)]) == 0  # fmt: skip
    config = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks
    application = config["applications"][0]
    assert application["import_path"] == app.IMPORT_PATH and config["http_options"] == {
        "host": "127.0.0.1",
        "port": 8123,
    }
    assert os.stat(path).st_mode & 0o077 == 0  # a token would be in it: the owner's only
    built = app.build(application["args"])  # the application `serve deploy` builds from it
    scaling = built._bound_deployment._deployment_config.autoscaling_config
    fields = ("min_replicas", "max_replicas", "upscale_delay_s", "downscale_delay_s")
    assert {k: getattr(scaling, k) for k in fields} == dict(zip(fields, (1, 3, 5, 60)))
    for argv in (["--host", "0.0.0.0"], ["--host", "192.0.2.7", "--replicas", "1"]):
        assert main(["serve", "--model", model, *argv, "--write-config", str(tmp_path / "x.yaml")]) == 2
        assert "--token" in capsys.readouterr().err
    with pytest.raises(MgcError, match="--min-replicas 4 is above --replicas 2"):
        ServeConfig(model=model, replicas=2, min_replicas=4)
    path.chmod(0o644)  # a file that was there: rewritten, it is the owner's only again
    assert main(["serve", "--model", model, "--host", "0.0.0.0", "--no-auth", "--write-config", str(path)]) == 0
    assert os.stat(path).st_mode & 0o077 == 0


@contextlib.contextmanager
def _flood(served, route: str, data: bytes, clients: int):
    """`clients` threads posting `data` to `route` again and again until the block ends; yields the
    list of statuses answered (a request that raised is left out)."""
    stop, statuses = threading.Event(), []

    def load():
        while not stop.is_set():
            with contextlib.suppress(requests.RequestException):
                statuses.append(_post(served, route, data).status_code)

    workers = [threading.Thread(target=load) for _ in range(clients)]
    for w in workers:
        w.start()
    try:
        yield statuses
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=120)


def test_a_killed_replica_is_replaced_and_the_service_answers_again(served, inbox):
    """SIGKILL the replica while uploads keep coming: Serve starts another, and within seconds
    the service labels again (requests in flight at the kill may fail; none after recovery)."""
    folder, truth = inbox
    data = (folder / truth.loc[truth["status"] == "ok", "file"].iloc[0]).read_bytes()
    before = requests.get(served["url"] + "/health", timeout=30).json()
    with _flood(served, "/label", data, 3) as seen:
        time.sleep(2)
        os.kill(before["pid"], signal.SIGKILL)
        killed_at, answered = time.time(), None
        while time.time() - killed_at < 90:
            with contextlib.suppress(requests.RequestException):
                health = requests.get(served["url"] + "/health", timeout=10).json()
                if health["pid"] != before["pid"] and _post(served, "/label", data).status_code == 200:
                    answered = time.time() - killed_at
                    break
            time.sleep(0.5)
    assert answered is not None, f"no answer within 90 s of the kill; statuses seen: {seen[-20:]}"
    assert answered < 60 and 200 in seen, (answered, seen[-20:])
    after = [_post(served, "/label", data).status_code for _ in range(3)]
    assert after == [200, 200, 200]
    print(f"replica replaced, labelling again {answered:.1f} s after the kill")


def test_the_pretrained_tagger_serves_with_no_trained_model(inbox):
    """`--model musicnn` (as `mgc label --model musicnn`): a replica's Service labels an upload as
    label_file does, with the tagger's 50 tags."""
    from mgc.serve.service import Service

    folder, truth = inbox
    file = folder / truth.loc[truth["status"] == "ok", "file"].iloc[0]
    service = Service(ServeConfig(model="musicnn"))
    assert len(service.describe()["classes"]) == 50 and service.describe()["multilabel"]
    row = service.label([(file.read_bytes(), "upload")])[0]
    assert row["status"] == "ok" and row["model_id"].startswith("musicnn-")
    assert np.allclose(row["probabilities"], label.label_file(str(file), "musicnn")["probabilities"], atol=1e-4)


def test_replicas_autoscale_between_min_and_max_under_load(served, model, inbox):
    """`--min-replicas 1 --replicas 2` (a second application beside the served one, half a CPU a
    replica): one replica while idle; under a steady flood of uploads beyond what one replica holds,
    Serve starts the second (after --upscale-delay-s: 1 s here, 30 by default); deleted, its CPUs
    come back."""
    import ray
    from ray import serve

    from mgc.serve import app

    folder, truth = inbox
    data = (folder / truth.loc[truth["status"] == "ok", "file"].iloc[0]).read_bytes()
    cfg = ServeConfig(model=model, replicas=2, min_replicas=1, replica_cpus=0.5, max_batch_size=2, upscale_delay_s=1)
    free = ray.available_resources().get("CPU", 0)
    serve.run(app.application(cfg), name="autoscaled", route_prefix="/autoscaled")

    def running() -> int:
        states = serve.status().applications["autoscaled"].deployments["UploadLabeller"].replica_states
        return states.get("RUNNING", 0)

    assert running() == 1
    # The served app's session: its token header means nothing to this app, which has none.
    with _flood(served, "/autoscaled/label", data, 12) as statuses:
        started, scaled = time.time(), None
        while time.time() - started < 180 and scaled is None:
            scaled = time.time() - started if running() == 2 else None
            time.sleep(1)
    assert scaled is not None, f"no second replica within 180 s of load; {len(statuses)} answers"
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    print(f"second replica running {scaled:.0f} s into the load ({len(statuses)} uploads answered)")
    serve.delete("autoscaled")
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < free and time.time() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) >= free
