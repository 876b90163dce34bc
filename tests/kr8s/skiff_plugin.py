"""pytest plugin: kr8s's `k8s_cluster` fixture (normally from pytest-kind) for a running skiff.

Environment:
  SKIFF_KUBECONFIG   the admin kubeconfig of the skiff server to test.
  SKIFF_HTTP_LOG     optional file: every kr8s request (method, URL, content type, status, and
                     the body of 4xx/5xx answers), for triage.
  SKIFF_LAST_TEST    optional file: the node id of the test running now, so that a run killed
                     from outside still says where it stopped.
  SKIFF_TRIAGE       optional file: for each test that fails or errors, a few lines saying where
                     it was (the suite's own frame) and what its namespace's pods and Events
                     showed at that moment (the namespace is gone after the run). Tests that
                     SKIFF_EXPECTED_FAILURES (the list's path) expects to fail, other than
                     flaky ones, are left out.

pytest-timeout arms one SIGALRM per test. When it fires during a fixture's setup (the fixtures
that wait for a pod to run do), the fixtures' teardown runs with no timer left, and a teardown
that then blocks would hang the whole run. A watchdog thread here re-sends SIGALRM to the main
thread, with every thread's stack on stderr, whenever one test has run much longer than its
timeout, so the hung test fails and the run goes on.

skiff does not decode protobuf request bodies yet, and `kubectl create namespace X` (used by the
suite's namespace fixture) sends one; this plugin sends that namespace as JSON instead.
"""
import faulthandler
import functools
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

KUBECONFIG = Path(os.environ["SKIFF_KUBECONFIG"])
HTTP_LOG = os.environ.get("SKIFF_HTTP_LOG")
TRIAGE = os.environ.get("SKIFF_TRIAGE")
EXPECTED_FAILURES = os.environ.get("SKIFF_EXPECTED_FAILURES")
LAST_TEST = os.environ.get("SKIFF_LAST_TEST")
_current = {"id": "-", "started": None}
# A test that has run this long (pytest-timeout's limit is 20 s) is taken to hang.
HUNG_AFTER = 60


class SkiffCluster:
    """Duck-types pytest_kind.KindCluster as kr8s's conftest.py uses it."""

    def __init__(self, kubeconfig):
        self.name, self.kubeconfig_path = "skiff", kubeconfig
        self.kubectl_path = Path(shutil.which("kubectl") or "kubectl")

    def kubectl(self, *args, **kwargs):
        if len(args) == 3 and args[:2] == ("create", "namespace"):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args[2]}}
            args, kwargs = ("create", "-f", "-"), {**kwargs, "input": json.dumps(body)}
        try:
            return subprocess.check_output(
                [str(self.kubectl_path), *args], encoding="utf-8", timeout=60,
                stderr=subprocess.PIPE,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig_path)}, **kwargs)
        except subprocess.CalledProcessError as error:
            raise KubectlFailed(error.returncode, error.cmd, error.output, error.stderr) from None


class KubectlFailed(subprocess.CalledProcessError):
    """A failed kubectl whose message carries what it wrote to stderr (the triage shows it)."""

    def __str__(self):
        return f"{super().__str__()} stderr: {(self.stderr or '').strip()[:500]}"


@pytest.fixture(scope="session", autouse=True)
def k8s_cluster():
    if not KUBECONFIG.exists():
        pytest.exit(f"{KUBECONFIG} not found: is skiff running?")
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    yield SkiffCluster(KUBECONFIG)


@pytest.fixture
def ensure_gc():  # lives in kr8s's repository-root conftest.py, not shipped in the wheel
    gc.collect()
    yield
    gc.collect()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _current["id"] = item.nodeid.split("/")[-1]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid, location):
    _current["started"] = time.monotonic()
    if LAST_TEST:
        with open(LAST_TEST, "w") as f:
            f.write(nodeid + "\n")


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    _current["started"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if not TRIAGE or not report.failed or item.nodeid.split("/")[-1] in _expected():
        return
    lines = [f"{item.nodeid.split('/')[-1]} ({report.when}): "
             f"{report.longreprtext.strip().splitlines()[-1][:200] if report.longreprtext else '?'}"]
    lines += _where(report.longreprtext or "")
    ns = item.funcargs.get("ns")
    if isinstance(ns, str):
        lines += _namespace_state(ns)
    with open(TRIAGE, "a") as f:
        f.write("\n".join(lines) + "\n\n")


@functools.cache
def _expected():
    """The ids the expected-failures list expects to fail, without its flaky ones."""
    ids = set()
    if EXPECTED_FAILURES:
        for line in Path(EXPECTED_FAILURES).read_text().splitlines():
            test, _, reason = line.partition("#")
            if test.strip() and not reason.strip().startswith("flaky:"):
                ids.add(test.strip())
    return ids


def _where(traceback):
    """The innermost frame of the suite's own files in a native traceback, with its line."""
    tb = traceback.splitlines()
    frames = [(i, m) for i, line in enumerate(tb)
              if (m := re.match(r'\s*File ".*/kr8s/tests/([^"]+)", line (\d+), in (\S+)', line))]
    if not frames:
        return []
    i, m = frames[-1]
    code = tb[i + 1].strip() if i + 1 < len(tb) else ""
    return [f"  at {m[1]}:{m[2]} in {m[3]}: {code}"[:220]]


def _namespace_state(ns):
    """Each pod's phase, conditions and container states, and the namespace's last Events."""
    def get(kind):
        try:
            out = subprocess.run(["kubectl", "get", kind, "-n", ns, "-o", "json"],
                                 capture_output=True, encoding="utf-8", timeout=15,
                                 env={**os.environ, "KUBECONFIG": str(KUBECONFIG)})
            return json.loads(out.stdout).get("items", []) if out.returncode == 0 else []
        except (subprocess.SubprocessError, ValueError):
            return []
    lines = []
    for pod in get("pods"):
        status = pod.get("status", {})
        conditions = " ".join(f"{c.get('type')}={c.get('status')}"
                              for c in status.get("conditions", []))
        states = " ".join(f"{c.get('name')}:{','.join(c.get('state', {})) or '?'}"
                          f"{'(ready)' if c.get('ready') else ''}"
                          for c in status.get("containerStatuses", []))
        lines.append(f"  pod {pod['metadata']['name']}: {status.get('phase')} "
                     f"ip={status.get('podIP')} {conditions} {states}"[:220])
    events = sorted(get("events"), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    for event in events[-6:]:
        lines.append(f"  event {event.get('type')} {event.get('reason')} "
                     f"{event.get('involvedObject', {}).get('name')} x{event.get('count', 1)}: "
                     f"{(event.get('message') or '').strip()}"[:220])
    return lines


def _watchdog():
    main = threading.main_thread().ident
    while True:
        time.sleep(5)
        started = _current["started"]
        if started is None or time.monotonic() - started < HUNG_AFTER:
            continue
        # Only while pytest-timeout's handler is installed: SIGALRM's default action would end
        # the process.
        if not callable(signal.getsignal(signal.SIGALRM)):
            continue
        print(f"\nskiff_plugin: {_current['id']} has run {HUNG_AFTER}+ s; its threads:",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        signal.pthread_kill(main, signal.SIGALRM)
        _current["started"] = time.monotonic()


def pytest_configure(config):
    threading.Thread(target=_watchdog, name="skiff-watchdog", daemon=True).start()
    if not HTTP_LOG:
        return
    import httpx

    original = httpx.AsyncClient.send

    async def send(self, request, *args, **kwargs):
        response = await original(self, request, *args, **kwargs)
        line = (f"[{_current['id']}] {request.method} {request.url} "
                f"ct={request.headers.get('content-type', '-')} -> {response.status_code}")
        if response.status_code >= 400:
            await response.aread()
            line += " " + response.text[:500].replace("\n", " ")
        with open(HTTP_LOG, "a") as f:
            f.write(line + "\n")
        return response

    httpx.AsyncClient.send = send
