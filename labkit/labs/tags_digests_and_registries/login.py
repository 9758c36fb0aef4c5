"""Section 7: logging in to a registry that asks for a password, and where the docker CLI keeps it."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import registry, undo
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import Completed, run
from labkit.labs.tags_digests_and_registries.declaration import app_registry, build_app, forget

USER = "ci"
HTTP, EXIT, FILE = "HTTP status", "exit code", "1 = found"  # what a row's code is
NO_CREDENTIALS = "upload started without credentials (POST /v2/<repo>/blobs/uploads/)"
PUSH_ANONYMOUS = "docker push, not logged in"
LOGIN_WRONG = "docker login --password-stdin, wrong password"
LOGIN = "docker login --password-stdin"
STORED = "the password in config.json, base64-decoded"
HELPER = "a credential helper configured (credsStore / credHelpers)"
PUSH_LOGGED_IN = "docker push, logged in"
LOGOUT = "docker logout: the entry gone from config.json"


def _said(done: Completed) -> str:
    """The last line the CLI printed, errors first (what a reader of a CI log sees)."""
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class LoginResult:
    """`steps`: step, kind (HTTP status / exit code / 1 = found), code, detail — an upload and a push without
    credentials, a login with a wrong password and one with the right one (``--password-stdin``), what the CLI
    wrote to its config.json, a push logged in and a logout. Empty when replaying a recording made without it."""

    steps: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.steps.empty

    def code(self, step: str) -> int:
        return int(self.steps.set_index("step").loc[step, "code"])

    def detail(self, step: str) -> str:
        return str(self.steps.set_index("step").loc[step, "detail"])

    @property
    def refused_then_accepted(self) -> bool:
        """Without credentials the upload answered 401 and the push failed; a wrong password failed; the right
        one logged in and the push then worked."""
        return (self.code(NO_CREDENTIALS) == 401 and self.code(PUSH_ANONYMOUS) != 0 and self.code(LOGIN_WRONG) != 0
                and self.code(LOGIN) == 0 and self.code(PUSH_LOGGED_IN) == 0)

    @property
    def password_on_disk(self) -> bool:
        """config.json held user:password, base64-encoded, with no credential helper in between."""
        return self.code(STORED) == 1 and self.code(HELPER) == 0

    def conclusion(self) -> str:
        if not self.recorded:
            return "*Not in the recording this notebook replays (it predates this section): a live run measures it.*"
        return (f"**What we measured.** Without credentials the registry answered the start of an upload with "
                f"**{self.code(NO_CREDENTIALS)}** ({self.detail(NO_CREDENTIALS)}), and `docker push` exited "
                f"{self.code(PUSH_ANONYMOUS)}: {self.detail(PUSH_ANONYMOUS)!r}. A wrong password made `docker login` "
                f"exit {self.code(LOGIN_WRONG)}; the right one, read from stdin as in the chapter's CI step, exited "
                f"{self.code(LOGIN)} and the push then exited {self.code(PUSH_LOGGED_IN)}. What the login left "
                f"behind: {self.detail(STORED)}"
                + (" — **the password itself, base64 is an encoding, not encryption**: anyone who can read that "
                   "file can push as this user. A credential helper (`credsStore`: pass, secretservice, or a "
                   "cloud's, like ECR's) keeps it out of the file; none was configured here. "
                   if self.password_on_disk else ". ")
                + f"`docker logout`: {self.detail(LOGOUT)}.")


def _config_entry(config_folder: Path, address: str) -> dict[str, str]:
    """The auths entry the docker CLI keeps for `address` in its config.json (empty when there is none)."""
    path = config_folder / "config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    return dict((config.get("auths") or {}).get(address) or {})


def run_login(lab: LabSession, port: int | None = None) -> LoginResult:
    """A registry that takes only user ``ci`` with a random password (htpasswd, bcrypt): upload and push without
    credentials, log in wrongly and rightly with ``--password-stdin``, read what the CLI stored, push, log out.
    The CLI's config is a throwaway folder (DOCKER_CONFIG), never the user's ~/.docker; it is removed after."""
    registry.validate_port(port)
    if (missing := lab.unrecorded("login")) is not None:
        return LoginResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        password = secrets.token_urlsafe(18)
        entry = registry.htpasswd_entry(USER, password)
        rows: list[dict[str, object]] = []

        def row(step: str, kind: str, code: int, detail: str) -> None:
            rows.append({"step": step, "kind": kind, "code": code, "detail": detail.replace(password, "<password>")})

        with (undo.temporary_folder("labkit-docker-config-") as folder,
              app_registry(lab, port, htpasswd=entry) as at):
            reg, scope, base, repository = at.reg, at.scope, at.base, at.repository
            config = Path(folder)
            env = {**os.environ, "DOCKER_CONFIG": str(config)}
            reference = reg.reference(repository, "1.0")
            try:
                build_app(scope, base, "app 1.0", reference)
                status, headers = reg.status("POST", f"{repository}/blobs/uploads/")
                row(NO_CREDENTIALS, HTTP, status, f"WWW-Authenticate: {headers.get('www-authenticate', '(none)')}")
                push = run([docker_cli(), "push", reference], 120, check=False, env=env)
                row(PUSH_ANONYMOUS, EXIT, push.exit_code, _said(push))
                login = [docker_cli(), "login", "--username", USER, "--password-stdin", reg.address]
                wrong = run(login, 60, check=False, env=env, input_text="not-" + password)
                row(LOGIN_WRONG, EXIT, wrong.exit_code, _said(wrong))
                right = run(login, 60, check=False, env=env, input_text=password)
                row(LOGIN, EXIT, right.exit_code, " / ".join((right.stderr + right.stdout).strip().splitlines()))
                stored = _config_entry(config, reg.address).get("auth", "")
                decoded = base64.b64decode(stored).decode(errors="replace") if stored else ""
                mode = oct((config / "config.json").stat().st_mode & 0o777) if (config / "config.json").exists() \
                    else "absent"
                row(STORED, FILE, int(decoded == f"{USER}:{password}"),
                    f"config.json (mode {mode}) auths[{reg.address!r}].auth = {len(stored)} base64 characters, "
                    f"decoding to {USER!r}:<password> — {'the exact' if decoded == f'{USER}:{password}' else 'NOT the'}"
                    " user and password typed")
                settings = json.loads((config / "config.json").read_text()) if (config / "config.json").exists() \
                    else {}
                helpers = [key for key in ("credsStore", "credHelpers") if settings.get(key)]
                row(HELPER, FILE, int(bool(helpers)), ", ".join(helpers) or "none: the file holds the password")
                pushed = run([docker_cli(), "push", reference], 300, check=False, env=env)
                row(PUSH_LOGGED_IN, EXIT, pushed.exit_code, _said(pushed))
                logout = run([docker_cli(), "logout", reg.address], 60, check=False, env=env)
                gone = not _config_entry(config, reg.address)
                row(LOGOUT, EXIT, logout.exit_code, "the entry is gone" if gone else "THE ENTRY IS STILL THERE")
            finally:
                forget(client, reference)
        return pd.DataFrame(rows)

    return LoginResult(lab.measure("login", experiment, port=port))
