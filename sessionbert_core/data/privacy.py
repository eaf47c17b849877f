"""Pseudonymization: the one pass every parsed file goes through before anything of it is stored.

An identifier of a person is replaced by its keyed pseudonym (`h` and 16 hex digits of HMAC-SHA256
under the deployment's key, the access logs' client-host pseudonym) wherever it stands: in every
text column kept (user, session, page, location, raw record, detail, event id, filtered reasons), in
file names, and in error messages. Identifiers are recognized by content (`PERSON`): e-mail addresses
(also `%40`- and `%2540`-encoded, as URLs carry them), IPv4 and IPv6 addresses, AWS ARNs and 12-digit
AWS account ids; and by key in raw JSON records (`IDENTIFIER_KEYS`: `email`, `ip`, `username`,
CloudTrail's `sourceIdentity` and `errorMessage`, ...). The same identifier gives the same pseudonym in
every file and format (an e-mail address is hashed in lower case, URL-decoded), so sessions still join.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

from sessionbert_core.data.access_log import pseudonym

_EMAIL = r"[\w.+%-]+(?:@|%40|%2540)[\w-]+(?:\.[\w-]+)+"
_ARN = r"\barn:aws[\w-]*:[^\"'\s,]*"
_NOT_IN = r"(?<![0-9A-Za-z.:])"  # an address or id stands alone: `_` and `/` may touch it (file names), letters not
_IPV4 = rf"{_NOT_IN}(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?![0-9A-Za-z])(?!\.\d)"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = (rf"{_NOT_IN}(?:{_H}:){{7}}{_H}(?![0-9A-Za-z:])"  # every group written
         rf"|{_NOT_IN}(?:{_H}:){{1,7}}:(?:{_H}(?::{_H}){{0,6}})?(?![0-9A-Za-z:])"  # a :: after groups (fe80::1)
         rf"|{_NOT_IN}::{_H}(?::{_H}){{0,6}}(?![0-9A-Za-z:])")  # a leading :: (::1, ::ffff:...)
_ACCOUNT = r"(?<![0-9A-Za-z])\d{12}(?![0-9A-Za-z])"  # an AWS account id (CloudTrail puts one in every file name)
PERSON = re.compile(f"{_EMAIL}|{_ARN}|{_IPV4}|{_IPV6}|{_ACCOUNT}")
# what may hold one of them, in polars' regex (no look-around): a wider net, `PERSON` then decides
MAY_NAME_PERSON = (r"@|%40|arn:aws|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|::|(?:[0-9a-fA-F]{1,4}:){7}"
                   r"|(?:^|[^0-9A-Za-z])\d{12}(?:[^0-9A-Za-z]|$)")
# keys of a raw JSON record (any case, at any depth, escaped inside a nested value too) whose value names someone
IDENTIFIER_KEYS = ("email", "e_mail", "e-mail", "mail", "email_address", "emailaddress", "ip", "ip_address",
                   "ipaddress", "client_ip", "clientip", "remote_addr", "remote_ip", "source_ip", "sourceipaddress",
                   "user_name", "username", "login", "full_name", "fullname", "first_name", "last_name", "phone",
                   "account_id", "accountid", "arn", "principalid", "sourceidentity", "errormessage")
_KEYED = re.compile(r'((?:\\*)"(?i:' + "|".join(map(re.escape, IDENTIFIER_KEYS))
                    + r')(?:\\*)"\s*:\s*)(\\*)"((?:[^"\\]|\\[^"])*)(\\*)"')
_KEYED_IN_POLARS = '(?i)"(?:' + "|".join(map(re.escape, IDENTIFIER_KEYS)) + r')\\*"\s*:'  # a key may follow
NOT_SCRUBBED = frozenset({"timestamp", "date", "cost", "billing_tier", "_reason"})  # values no person is named in


class Pseudonymizer:
    """The keyed pass: `text` for one string, `frame` for every text column of a table, `name` for a file name."""

    def __init__(self, key: bytes):
        self.key = key
        self._known: dict[str, str] = {}

    def of(self, identifier: str) -> str:
        """The pseudonym of one identifier (an e-mail address in its canonical form)."""
        if identifier not in self._known:
            self._known[identifier] = pseudonym(_canonical(identifier), self.key)
        return self._known[identifier]

    def text(self, value: str | None) -> str | None:
        """`value` with every identifier replaced: keyed JSON values first, then the patterns."""
        if not value:
            return value
        if '"' in value:
            value = _KEYED.sub(lambda m: f'{m[1]}{m[2]}"{self._keyed(m[3])}{m[4]}"', value)
        return PERSON.sub(lambda m: self.of(m[0]), value)

    def _keyed(self, value: str) -> str:
        """A value under an identifier key: its pseudonym, unless empty or one already."""
        return value if not value or PSEUDONYM.fullmatch(value) else self.of(value)

    def name(self, name: str) -> str:
        """A file's name in the landing folder as stored (partition keys, metadata, quarantine)."""
        return self.text(name)

    def frame(self, frame: pl.DataFrame, skip: Iterable[str] = NOT_SCRUBBED) -> pl.DataFrame:
        """Every text column but `skip` with its identifiers replaced: polars finds the values that hold one
        over the whole column, and only those (each distinct one once) go through `text`."""
        skip = set(skip)
        columns = [c for c, dtype in frame.schema.items() if dtype == pl.String and c not in skip]
        if not columns or frame.height == 0:
            return frame
        replaced = []
        for column in columns:
            values = frame[column]
            holds = (values.str.contains(MAY_NAME_PERSON) | values.str.contains(_KEYED_IN_POLARS)).fill_null(False)
            if holds.any():
                at = holds.arg_true()
                held = values.gather(at)
                values = values.clone().scatter(at, held.replace_strict(
                    {v: self.text(v) for v in held.unique()}, return_dtype=pl.String))
            replaced.append(values.alias(column))
        return frame.with_columns(replaced)


PSEUDONYM = re.compile(r"h[0-9a-f]{16}")


def _canonical(identifier: str) -> str:
    """One form per identifier: e-mail addresses URL-decoded and in lower case."""
    if "@" in identifier or "%40" in identifier:
        return identifier.replace("%2540", "@").replace("%40", "@").lower()
    return identifier
