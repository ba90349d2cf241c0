"""Users, API tokens and the audit log."""

from __future__ import annotations

import json
import sys

import click

from camtrace import validation
from camtrace.cli.base import (
    access_store,
    audited_cli,
    cli,
    echo_rows,
    format_ts,
)
from camtrace.enums import Role, values


def read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


def expiry(expires: str | None, days: float | None) -> float | None:
    """--expires (ISO time or epoch seconds) or --days (from now) as epoch seconds; None: never."""
    import time

    from camtrace.errors import InputError

    if expires and days is not None:
        raise InputError("give --expires or --days, not both")
    if days is not None:
        if not 0 < days <= 36500:
            raise InputError("--days must be more than 0 and at most 36500")
        return time.time() + days * 86400
    return validation.moment(expires, "--expires")


def token_line(row: dict) -> str:
    expires = format_ts(row["expires_at"]) if row["expires_at"] else "never"
    return f"{row['id']}  {row['username']:<16} created {format_ts(row['created_at'])}  expires {expires}"


@cli.group()
def user() -> None:
    """Users of the HTTP API and the page: roles operator, investigator, admin."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(values(Role)), required=True)
@click.option("--camera", "cameras", multiple=True, help="Limit the user to this camera (repeatable); default: all cameras.")
@click.option("--password-stdin", is_flag=True, help="Read a password for the page's login from stdin.")
@click.option("--token-expires", help="When the first API token stops working (ISO time); default: never.")
@click.option("--json", "as_json", is_flag=True, help="Print the user and the token as JSON.")
def user_add(
    name: str, role: str, cameras: tuple[str, ...], password_stdin: bool, token_expires: str | None, as_json: bool
) -> None:
    """Create user NAME and print an API token (shown once: only its hash is stored)."""
    access = access_store()
    password = read_password(True) if password_stdin else None
    detail = {"username": name, "role": role, "cameras": list(cameras) or None}
    with audited_cli(access, "user_add", detail, [name]) as entry:
        token = access.add_user(
            name, role, list(cameras) or None, password, token_expires_at=validation.moment(token_expires, "--token-expires")
        )
        entry.detail["token_id"] = token.id
    if as_json:
        click.echo(json.dumps({**access.get_user(name).as_dict(), "token": token.token, "token_id": token.id}))
    else:
        click.echo(f"user {name} ({role}) created; API token {token.id} (shown once): {token.token}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
def user_list(as_json: bool) -> None:
    """List users with their role and cameras."""
    rows = [{**user.as_dict(), "created_at": created} for user, created in access_store().users()]
    echo_rows(rows, as_json, lambda r: f"{r['username']:<16} {r['role']:<13} {', '.join(r['cameras'] or ['all cameras'])}")


@user.command("remove")
@click.argument("name")
def user_remove(name: str) -> None:
    """Remove user NAME with its tokens and sessions (its audit rows stay)."""
    access = access_store()
    with audited_cli(access, "user_remove", {"username": name}, [name]):
        access.remove_user(name)
    click.echo(f"user {name} removed")


@user.command("passwd")
@click.argument("name")
def user_passwd(name: str) -> None:
    """Set NAME's password for the page (asked for, or read from stdin); ends its open sessions."""
    access = access_store()
    password = read_password(False)
    with audited_cli(access, "user_passwd", {"username": name}, [name]):
        access.set_password(name, password)
    click.echo(f"password of {name} set")


@cli.group()
def token() -> None:
    """API tokens (sent as 'Authorization: Bearer <token>'): create, list, revoke."""


@token.command("create")
@click.argument("name")
@click.option("--expires", help="When the token stops working (ISO time or epoch seconds); default: never.")
@click.option("--days", type=float, help="The token stops working this many days from now.")
@click.option("--json", "as_json", is_flag=True)
def token_create(name: str, expires: str | None, days: float | None, as_json: bool) -> None:
    """Create another API token for user NAME (shown once)."""
    access = access_store()
    expires_at = expiry(expires, days)
    with audited_cli(access, "token_create", {"username": name, "expires_at": expires_at}, [name]) as entry:
        new = access.create_token(name, expires_at)
        entry.detail["token_id"] = new.id
    click.echo(json.dumps(new.as_dict()) if as_json else new.token)


@token.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def token_list(name: str, as_json: bool) -> None:
    """User NAME's tokens: id, creation and expiry (the secrets are never shown again)."""
    echo_rows([info.as_dict() for info in access_store().tokens(name)], as_json, token_line)


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke the token with id TOKEN_ID (`camtrace token list NAME` shows the ids) at once."""
    access = access_store()
    with audited_cli(access, "token_revoke", {"token_id": token_id}, [token_id]) as entry:
        revoked = access.revoke_token(token_id)
        entry.detail["username"] = revoked.username
    click.echo(f"token {token_id} of {revoked.username} revoked")


@cli.group(invoke_without_command=True)
@click.option("--user", "username", help="Only this user's actions.")
@click.option("--since", help="Only actions at or after this ISO time.")
@click.option("--until", help="Only actions at or before this ISO time.")
@click.option("--action", help="Only this action (search_text, track_view, login_failed ...).")
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx, username, since, until, action, limit, as_json) -> None:
    """The audit log, newest first: searches, views, re-id, traces, feedback, exports and logins.

    `camtrace audit verify` checks that no row was deleted, changed or inserted; `camtrace audit head`
    prints the newest row's hash to keep outside the database.
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = access_store().audit_rows(
        username=username,
        since=validation.moment(since, "--since"),
        until=validation.moment(until, "--until"),
        action=action,
        limit=limit,
    )
    echo_rows(
        [row.as_dict() for row in rows],
        as_json,
        lambda r: (
            f"{format_ts(r['ts'])}  {r['username'] or '-':<14} {r['action']:<14} {json.dumps(r['detail'])}"
            + (f"  -> {len(r['result_ids'])} ids" if r["result_ids"] else "")
        ),
    )


@audit.command("head")
@click.option("--json", "as_json", is_flag=True)
def audit_head(as_json: bool) -> None:
    """The newest audit row's id and hash, as ID:HASH: keep it outside the database, and check the log
    against it later with `camtrace audit verify --anchor ID:HASH`."""
    row_id, row_hash = access_store().audit_head()
    click.echo(json.dumps({"id": row_id, "hash": row_hash}) if as_json else f"{row_id}:{row_hash}")


@audit.command("verify")
@click.option("--anchor", "anchors", multiple=True, help="An ID:HASH printed earlier by `camtrace audit head` (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(anchors: tuple[str, ...], as_json: bool) -> None:
    """Walk the audit log's hash chain; exit 1 naming the first row that does not fit (deleted, changed or
    inserted behind camtrace's back)."""
    from camtrace.errors import InputError

    parsed = []
    for anchor in anchors:
        row_id, _, row_hash = anchor.partition(":")
        if not row_id.isdigit() or len(row_hash) != 64:
            raise InputError(f"--anchor {anchor!r} is not ID:HASH as `camtrace audit head` prints it")
        parsed.append((int(row_id), row_hash.lower()))
    report = access_store().verify_audit(parsed)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        click.echo(f"audit log intact: {report.rows} rows, head {report.last_id}:{report.last_hash}")
    else:
        click.echo(f"audit log tampered with at row {report.bad_row}: {report.problem}", err=True)
    sys.exit(0 if report.ok else 1)
