"""The servers bench/run.py starts on loopback, and the one place that stops them all.

:class:`Children` owns every child process of a run: each server is registered as it starts and
:meth:`Children.stop_all` (called from ``finally``, so also on Ctrl-C and on errors) stops them
in reverse order, each bounded in time. nginx runs with one of the shipped configurations of
deploy/nginx/, of which only the upstream ports, ``listen``, the access log's path and the cache
directory are substituted (as tests/deploy/test_nginx.py does), or with a reference
configuration of the same shape: nginx proxying straight to the content server, or answering
204 itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from common import ROOT, Gateway, free_port, port_open, proc_stat, start, stop, wait_http

NGINX_DIR = ROOT / "deploy" / "nginx"
PLAIN_CONFIG = "paywall-auth.conf"
CACHED_CONFIG = "paywall-auth-cached.conf"
SHIPPED_CACHE_DIR = "/var/cache/nginx/paywall-auth"
SHIPPED_ACCESS_LOG = "/var/log/nginx/access.log"


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Process:
    """A child process registered with :class:`Children`."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        stop(self.popen)


class Server(Process):
    """A child process serving HTTP on 127.0.0.1:``port``."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int) -> None:
        super().__init__(popen)
        self.port = port


class Children:
    """Every server of a run; :meth:`stop_all` stops them, newest first."""

    def __init__(self) -> None:
        self._running: list[Stoppable] = []

    def add(self, child: Stoppable) -> None:
        self._running.append(child)

    def stop(self, child: Stoppable) -> None:
        """Stop one child now (it is forgotten)."""
        with contextlib.suppress(ValueError):
            self._running.remove(child)
        child.stop()

    def stop_all(self) -> None:
        while self._running:
            child = self._running.pop()
            with contextlib.suppress(Exception):
                child.stop()

    def python(self, script: str, *args: object, log: Path | None = None) -> Server:
        """``python bench/<script> PORT args...`` in the repository root, on a free port, once
        it answers HTTP."""
        port = free_port()
        popen = start([sys.executable, f"bench/{script}", str(port), *map(str, args)], log=log)
        server = Server(popen, port)
        self.add(server)
        wait_http(f"http://127.0.0.1:{port}/")
        return server

    def bare_app(self, log: Path | None = None, *, empty: bool = False) -> Server:
        """bench/bare_app.py on a free port (answers 200 "ok" to anything, or with ``empty``
        200 without a body)."""
        return self.python("bare_app.py", *(["--empty"] if empty else []), log=log)

    def bare_proxy(self, upstream: int, log: Path | None = None) -> Server:
        return self.python("bare_proxy.py", upstream, log=log)

    def gateway(self, config: Path, log: Path | None = None) -> Gateway:
        gateway = Gateway(config, log=log)
        self.add(gateway)
        return gateway

    def adopt(self, popen: subprocess.Popen[bytes]) -> Process:
        process = Process(popen)
        self.add(process)
        return process


# --- nginx ---------------------------------------------------------------------------------


def nginx_binary() -> str:
    """nginx with the auth_request module, or a RuntimeError saying what to install."""
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    built = subprocess.run(
        [path, "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stderr
    if "--with-http_auth_request_module" not in built:
        raise RuntimeError(f"{path} lacks the auth_request module (nginx -V)")
    return path


def shipped_site(
    name: str, *, gateway_port: int, content_port: int, port: int, prefix: Path
) -> str:
    """A shipped configuration with the bench's ports, access log and cache directory. Every
    replaced text must occur exactly once, so a reshaped file fails here instead of measuring
    something else."""
    text = (NGINX_DIR / name).read_text(encoding="utf-8")
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{gateway_port};",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{content_port};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        SHIPPED_ACCESS_LOG: str(prefix / "site-access.log"),
    }
    if "proxy_cache_path" in text:
        replacements[SHIPPED_CACHE_DIR] = str(prefix / "auth-cache")
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise RuntimeError(f"{name}: expected {old!r} exactly once")
        text = text.replace(old, new)
    return text


def direct_site(*, content_port: int, port: int, prefix: Path) -> str:
    """The reference: nginx proxying every request straight to the content server, with the
    same upstream keep-alive and an access log in nginx's combined format."""
    return f"""
upstream content {{
    server 127.0.0.1:{content_port};
    keepalive 16;
}}
server {{
    listen 127.0.0.1:{port};
    access_log {prefix / "site-access.log"} combined;
    location / {{
        proxy_pass http://content;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }}
}}
"""


def status_204_site(*, port: int, prefix: Path) -> str:
    """The limit: nginx answering 204 itself (same access log)."""
    return f"""
server {{
    listen 127.0.0.1:{port};
    access_log {prefix / "site-access.log"} combined;
    location / {{
        return 204;
    }}
}}
"""


def main_config(prefix: Path) -> str:
    """The top-level nginx.conf: one worker (two cores: one for wrk, one for the servers),
    everything nginx writes under ``prefix``."""
    # A root master would run its worker as "nobody", who cannot enter the temporary dir.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\n"
        "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {prefix}/access.log;\n"
        f"    client_body_temp_path {prefix}/client_body;\n"
        f"    proxy_temp_path {prefix}/proxy;\n"
        f"    fastcgi_temp_path {prefix}/fastcgi;\n"
        f"    uwsgi_temp_path {prefix}/uwsgi;\n"
        f"    scgi_temp_path {prefix}/scgi;\n"
        f"    include {prefix}/site.conf;\n"
        "}\n"
    )


class Nginx:
    """nginx (master + one worker) on a free loopback port, in its own process group."""

    def __init__(self, binary: str, prefix: Path, site: Callable[[int], str]) -> None:
        self.prefix = prefix
        for _ in range(3):  # the port is only free when chosen
            self.port = free_port()
            prefix.mkdir(parents=True, exist_ok=True)
            (prefix / "site.conf").write_text(site(self.port), encoding="utf-8")
            (prefix / "nginx.conf").write_text(main_config(prefix), encoding="utf-8")
            with (prefix / "stderr.log").open("ab") as stderr:
                self.process = subprocess.Popen(
                    [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                if port_open(self.port):
                    return
                time.sleep(0.05)
            self.stop()
            if "Address already in use" not in self.errors():
                break
        raise RuntimeError(f"nginx did not start:\n{self.errors()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """The pids of nginx's worker processes (not the master, not a cache manager or
        loader); waits up to 10 s for the master to start them."""
        deadline = time.monotonic() + 10
        while True:
            found = []
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if int(proc_stat(int(entry.name))[1]) != self.process.pid:
                        continue
                    if b"worker process" in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:  # gone meanwhile
                    continue
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not found:
            raise RuntimeError(f"nginx (pid {self.process.pid}) has no worker process")
        return found

    def errors(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return text

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), bounded; then the whole process group is killed."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start_nginx(children: Children, binary: str, prefix: Path, site: Callable[[int], str]) -> Nginx:
    nginx = Nginx(binary, prefix, site)
    children.add(nginx)
    return nginx
