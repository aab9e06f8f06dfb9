"""A real Request Tracker 5 on 127.0.0.1, from Debian's packages, for tests and benchmarks.

``RtServer(workdir)`` writes its own RT_SiteConfig.pm into ``workdir`` (setting
both ``RT_SITE_CONFIG`` and ``RT_SITE_CONFIG_DIR`` so that RT ignores
/etc/request-tracker5 entirely), creates a fresh SQLite database there with
``rt-setup-database-5``, provisions queues, a daemon user with only the rights
the connector needs, and REST2 tokens through RT's Perl API, and runs
``rt-server`` on a free loopback port with few workers.  Stop it with SIGTERM
(never SIGINT: as root, rt-server's SIGINT handler chowns /var/lib/request-tracker5).

Install the packages with ``.ci/install-rt.sh``.  :func:`rt_unavailable_reason`
says why RT cannot run here (``None`` when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.net import free_port

RT_SERVER = Path("/usr/share/request-tracker5/libexec/rt-server")
RT_LIB = Path("/usr/share/request-tracker5/lib")
RT_SETUP_DATABASE = "rt-setup-database-5"

#: the rights the connector's RT user needs on the queues it reads and writes; CreateTicket is
#: needed on every queue it moves tickets INTO (RT checks it in SetQueue; without it: "Permission Denied")
CONNECTOR_RIGHTS = ("ShowTicket", "ShowTicketComments", "ModifyTicket", "CommentOnTicket", "SeeQueue", "CreateTicket")


def rt_unavailable_reason() -> str | None:
    """Why a local RT cannot be started here, or None when it can."""
    if not RT_SERVER.exists():
        return f"Request Tracker 5 is not installed ({RT_SERVER} missing); run .ci/install-rt.sh"
    if shutil.which(RT_SETUP_DATABASE) is None:
        return f"{RT_SETUP_DATABASE} not found; run .ci/install-rt.sh (packages rt5-db-sqlite, rt5-standalone)"
    if shutil.which("perl") is None:
        return "perl not found"
    return None


def _perl_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RtStartError(RuntimeError):
    """RT could not be set up or did not come up."""


@dataclass
class RtServer:
    """One RT instance with its own database, configuration and port."""

    workdir: Path
    workers: int = 2
    port: int = 0
    root_password: str = "rt-test-root-password"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    root_token: str = field(default="", init=False)
    tokens: dict[str, str] = field(default_factory=dict, init=False)
    #: files in ``workdir``: the site configuration, the SQLite database, the outgoing mail, the server's log
    site_config: Path = field(init=False, repr=False)
    database: Path = field(init=False, repr=False)
    mail_sink: Path = field(init=False, repr=False)
    log_file: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.site_config = self.workdir / "RT_SiteConfig.pm"
        self.database = self.workdir / "rt.sqlite"
        self.mail_sink = self.workdir / "mail.out"
        self.log_file = self.workdir / "rt-server.log"
        if not self.port:
            self.port = free_port()

    # ------------------------------------------------------------------ paths and env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/REST/2.0"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RT_SITE_CONFIG"] = str(self.site_config)
        env["RT_SITE_CONFIG_DIR"] = str(self.workdir / "RT_SiteConfig.d")
        env.setdefault("LANG", "C.UTF-8")
        return env

    # ------------------------------------------------------------------ set-up

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "RT_SiteConfig.d").mkdir(exist_ok=True)
        sink = self.workdir / "sendmail-sink.sh"
        sink.write_text(f"#!/bin/sh\ncat >> {self.mail_sink}\n", encoding="utf-8")
        sink.chmod(0o755)
        lines = [
            "Set($rtname, 'rt.test');",
            "Set($Organization, 'rt.test');",
            "Set($Timezone, 'UTC');",
            "Set($CorrespondAddress, 'rt@rt.test');",
            "Set($CommentAddress, 'rt-comment@rt.test');",
            "Set($WebDomain, '127.0.0.1');",
            f"Set($WebPort, {self.port});",
            "Set($WebPath, '');",
            f"Set($WebBaseURL, 'http://127.0.0.1:{self.port}');",
            "Set($DatabaseType, 'SQLite');",
            f"Set($DatabaseName, {_perl_string(str(self.database))});",
            "Set($LogToSTDERR, 'warning');",
            "Set($LogToFile, undef);",
            "Set($LogToSyslog, undef);",
            "Set($MailCommand, 'sendmailpipe');",
            f"Set($SendmailPath, {_perl_string(str(sink))});",
            "Set($SendmailArguments, '');",
            "Set($RestrictReferrer, 0);",
            "1;",
        ]
        self.site_config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def init_database(self) -> None:
        """Create the SQLite database (a few seconds)."""
        if self.database.exists():
            self.database.unlink()
        password_file = self.workdir / "root-password"
        password_file.write_text(self.root_password, encoding="utf-8")
        result = subprocess.run(
            [RT_SETUP_DATABASE, "--action", "init", "--force", "--root-password-file", str(password_file)],
            env=self.env(), capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0 or not self.database.exists():
            raise RtStartError(f"rt-setup-database-5 failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def perl(self, body: str, timeout: float = 120) -> str:
        """Run Perl with RT loaded (as the system user); return its stdout."""
        script = (
            f"use strict; use warnings; use lib {_perl_string(str(RT_LIB))};\n"
            "use RT; RT::LoadConfig(); RT::Init();\n"
            "sub die_unless { my ($ok, $msg) = @_; die \"$msg\\n\" unless $ok; return $ok; }\n"
            + body
        )
        result = subprocess.run(["perl", "-e", script], env=self.env(), capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RtStartError(f"perl provisioning failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        return result.stdout

    def provision(self, queues: list[str], users: dict[str, dict[str, tuple[str, ...]]]) -> None:
        """Create ``queues``, a REST2 token for root (:attr:`root_token`), and for each user in
        ``users`` (name -> {queue or ``*`` for global: rights}) a privileged user with those
        rights and a token (:attr:`tokens`)."""
        qlist = ", ".join(_perl_string(q) for q in queues)
        ulines = []
        for name, grants in users.items():
            glines = []
            for qn, rights in grants.items():
                obj = "RT->System" if qn == "*" else (
                    f"do {{ my $q = RT::Queue->new(RT->SystemUser); $q->Load({_perl_string(qn)}) "
                    f"or die \"no queue {qn}\\n\"; $q }}"
                )
                for right in rights:
                    glines.append(f"    die_unless($u->PrincipalObj->GrantRight(Right => {_perl_string(right)}, Object => {obj}));")
            grant_code = "\n".join(glines)
            ulines.append(f"""
{{
    my $u = RT::User->new(RT->SystemUser);
    $u->Load({_perl_string(name)});
    unless ($u->id) {{
        die_unless($u->Create(Name => {_perl_string(name)}, Privileged => 1,
                              EmailAddress => {_perl_string(name + "@rt.test")}));
    }}
{grant_code}
    my $t = RT::AuthToken->new(RT->SystemUser);
    my ($id, $msg, $auth) = $t->Create(Owner => $u->id, Description => 'helpdesk-connector tests');
    die "token: $msg\\n" unless $id;
    $tokens{{{_perl_string(name)}}} = $auth;
}}""")
        body = f"""
use JSON;
my %tokens;
for my $qn ({qlist}) {{
    my $q = RT::Queue->new(RT->SystemUser);
    $q->Load($qn);
    die_unless($q->Create(Name => $qn)) unless $q->id;
}}
{{
    my $root = RT::User->new(RT->SystemUser);
    $root->Load('root');
    my $t = RT::AuthToken->new(RT->SystemUser);
    my ($id, $msg, $auth) = $t->Create(Owner => $root->id, Description => 'tests (root)');
    die "token: $msg\\n" unless $id;
    $tokens{{root}} = $auth;
}}
{''.join(ulines)}
print JSON::to_json(\\%tokens);
"""
        out = self.perl(body)
        tokens = json.loads(out.strip().splitlines()[-1])
        self.root_token = tokens.pop("root")
        self.tokens.update(tokens)

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 120) -> None:
        """Start rt-server and wait until REST2 answers."""
        if self.process is not None and self.process.poll() is None:
            return
        if not self.database.exists():
            raise RtStartError(f"no RT database at {self.database}: call init_database() first "
                               "(without one, rt-server serves its web installer)")
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [str(RT_SERVER), "--host", "127.0.0.1", "--port", str(self.port), "--max-workers", str(self.workers)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RtStartError(f"rt-server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                response = httpx.get(f"{self.api_url}/rt", auth=("root", self.root_password), timeout=10)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RtStartError(f"rt-server did not answer within {timeout:.0f}s: {self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the server (its process group) and wait for it."""
        proc = self.process
        if proc is None:
            return
        self.process = None
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ test helpers (as root)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"token {self.root_token}"} if self.root_token else {},
            auth=None if self.root_token else ("root", self.root_password),
            timeout=60,
        )

    def create_ticket(self, queue: str, subject: str, content: str, *, content_type: str = "text/plain",
                      priority: int | None = None, **extra: Any) -> str:
        data: dict[str, Any] = {"Queue": queue, "Subject": subject, "Content": content,
                                "ContentType": content_type, **extra}
        if priority is not None:
            data["Priority"] = priority
        with self.client() as c:
            r = c.post("/ticket", json=data)
            r.raise_for_status()
            return str(r.json()["id"])

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        """Queue name, priority, status and the transactions' types of one ticket."""
        with self.client() as c:
            q = c.get("/tickets", params={
                "query": f"id = {int(ticket_id)}",
                "fields": "Queue,Priority,Status,Subject", "fields[Queue]": "Name",
            })
            q.raise_for_status()
            item = q.json()["items"][0]
            return {"queue": item["Queue"]["Name"], "priority": str(item["Priority"]),
                    "status": item["Status"], "subject": item["Subject"]}

    def comments(self, ticket_id: str) -> list[str]:
        """The text of every comment (internal note) on a ticket, oldest first."""
        with self.client() as c:
            r = c.get(f"/ticket/{int(ticket_id)}/history", params={"fields": "Type", "per_page": 100})
            r.raise_for_status()
            txn_ids = [str(i["id"]) for i in r.json()["items"] if i.get("Type") == "Comment"]
            out = []
            for tid in txn_ids:
                a = c.get(f"/transaction/{tid}/attachments", params={"fields": "ContentType,Content"})
                a.raise_for_status()
                parts = [i.get("Content") or "" for i in a.json()["items"] if i.get("ContentType") == "text/plain"]
                out.append("\n".join(parts))
            return out

    def history(self, ticket_id: str) -> list[dict[str, str]]:
        """Every transaction of a ticket: type, field, creator (user name), oldest first."""
        with self.client() as c:
            r = c.get(f"/ticket/{int(ticket_id)}/history",
                      params={"fields": "Type,Field,Creator,OldValue,NewValue", "per_page": 100})
            r.raise_for_status()
            return [{"type": i.get("Type", ""), "field": i.get("Field", ""),
                     "creator": str((i.get("Creator") or {}).get("id", "")),
                     "old": str(i.get("OldValue", "")), "new": str(i.get("NewValue", ""))}
                    for i in r.json()["items"]]

    def update(self, ticket_id: str, **fields: Any) -> list[str]:
        with self.client() as c:
            r = c.put(f"/ticket/{int(ticket_id)}", json=fields)
            r.raise_for_status()
            return list(r.json())
