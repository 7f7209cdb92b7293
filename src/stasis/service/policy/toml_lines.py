"""Where keys are in a TOML text: the line of every key path (``tomllib`` keeps none)."""

from __future__ import annotations

import re
import tomllib

KeyPath = tuple[str | int, ...]


class _Scanner:
    """Walks TOML text that ``tomllib`` accepted and notes the line of every key.

    Lines are 1-based. A table header's path gets the header's line, a key its own,
    an array element the line it starts on; arrays of tables count their entries.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self.aot: dict[KeyPath, int] = {}

    def _peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.s.count("\n", self.i, self.i + n)
        self.i += n

    def _skip(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self._advance()
            elif c == "#":
                end = self.s.find("\n", self.i)
                self._advance((len(self.s) if end < 0 else end) - self.i)
            else:
                return

    def _string(self) -> str:
        for quote in ('"""', "'''"):
            if self._peek(3) == quote:
                end = self.i + 3
                while True:
                    end = self.s.index(quote, end)
                    if quote == '"""' and _escaped(self.s, end):
                        end += 1
                        continue
                    break
                while self.s[end + 3:end + 4] == quote[0]:  # """a"""" ends at the last three
                    end += 1
                raw = self.s[self.i + 3:end]
                self._advance(end + 3 - self.i)
                return raw
        quote = self.s[self.i]
        end = self.i + 1
        while self.s[end] != quote or (quote == '"' and _escaped(self.s, end)):
            end += 1
        raw = self.s[self.i + 1:end]
        self._advance(end + 1 - self.i)
        if quote == '"':
            parsed: str = tomllib.loads(f'k = "{raw}"')["k"]
            return parsed
        return raw

    def _key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self._skip(newlines=False)
            if self._peek() in ('"', "'"):
                parts.append(self._string())
            else:
                m = re.compile(r"[A-Za-z0-9_-]+").match(self.s, self.i)
                assert m is not None
                parts.append(m.group())
                self._advance(len(m.group()))
            self._skip(newlines=False)
            if self._peek() != ".":
                return parts
            self._advance()

    def _note(self, path: KeyPath, line: int) -> None:
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    def _value(self, path: KeyPath) -> None:
        self._note(path, self.line)
        c = self._peek()
        if c == "[":
            self._advance()
            index = 0
            while True:
                self._skip(newlines=True)
                if self._peek() == "]":
                    self._advance()
                    return
                self._value((*path, index))
                index += 1
                self._skip(newlines=True)
                if self._peek() == ",":
                    self._advance()
        elif c == "{":
            self._advance()
            while True:
                self._skip(newlines=False)
                if self._peek() == "}":
                    self._advance()
                    return
                if self._peek() == ",":
                    self._advance()
                    continue
                self._pair(path)
        elif c in ('"', "'"):
            self._string()
        else:
            m = re.compile(r"[^,\]}\n#]*").match(self.s, self.i)
            assert m is not None
            self._advance(len(m.group().rstrip()))

    def _pair(self, table: KeyPath) -> None:
        line = self.line
        key = self._key()
        path = (*table, *key)
        self._note(path, line)
        self._skip(newlines=False)
        self._advance()  # '='
        self._skip(newlines=False)
        self._value(path)

    def _resolve(self, key: list[str], array: bool) -> KeyPath:
        path: KeyPath = ()
        for n, part in enumerate(key):
            path = (*path, part)
            last = n == len(key) - 1
            if last and array:
                self.aot[path] = self.aot.get(path, 0) + 1
            if path in self.aot:
                path = (*path, self.aot[path] - 1)
        return path

    def scan(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.i >= len(self.s):
                return self.lines
            line = self.line
            if self._peek() == "[":
                array = self._peek(2) == "[["
                self._advance(2 if array else 1)
                table = self._resolve(self._key(), array)
                self._advance(2 if array else 1)
                self._note(table, line)
                self.lines[table] = line
            else:
                self._pair(table)


def _escaped(text: str, at: int) -> bool:
    """Whether the character at ``at`` follows an odd number of backslashes."""
    n = 0
    while at - n - 1 >= 0 and text[at - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def key_lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key path (``("policy", 0, "retention", "keep_daily")``)."""
    return _Scanner(text).scan()
