#!/usr/bin/env python3
"""Fail when an ELF binary needs a glibc symbol version newer than Lambda's.

`provided.al2023` has glibc 2.34. A binary linked on a newer host (Ubuntu 24.04, Debian 13 and
most CI images have 2.38+) can bind C code to newer symbol versions, e.g. `__isoc23_strtol@
GLIBC_2.38` from any C file compiled with their headers, and then the function fails at cold start
("version `GLIBC_2.38' not found"). The dynamic loader checks exactly what this script reads: the
version needs (`.gnu.version_r`, the section `readelf -V` prints) against libc.so.6 and friends,
and, per undefined dynamic symbol, the version it is bound to (`.gnu.version`, as `objdump -T`
shows it), so a failure names the symbols responsible.

The function binaries `make test` builds are linked against the build host's glibc, like a
`cargo lambda build --compiler cargo` would be, so checking them costs no release build and
catches what would break such a build. `make build` links against glibc 2.34 itself (zig,
target `<arch>-unknown-linux-gnu.2.34`) and runs this script on its output too.

Standard library only (no binutils needed); reads ELF32/ELF64 of either byte order.

With `--arch x86_64|arm64` each binary must also be for that machine: the template's
`Architecture` parameter and the binaries SAM uploads must agree, or the function fails with an
exec format error (cargo-lambda builds for the build host's architecture when SAM passes nothing,
which it does for x86_64 functions).

Usage: check_glibc.py [--max 2.34] [--arch x86_64|arm64] BINARY...
Exit status: 0 every binary needs at most --max (and is for --arch), 1 some binary needs more (or
is for another machine), 2 a file is missing or is not an ELF file.
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
from dataclasses import dataclass, field

SHT_DYNSYM = 11
# ELF e_machine values, by the name the template's Architecture parameter uses.
MACHINES = {"x86_64": 62, "arm64": 183}
SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_GNU_VERSYM = 0x6FFFFFFF
GLIBC_VERSION = re.compile(r"GLIBC_(\d+(?:\.\d+)*)$")
# Bit 15 of a .gnu.version entry marks a hidden symbol; the index is the low 15 bits.
VERSYM_INDEX_MASK = 0x7FFF


class NotElf(ValueError):
    """The file is not an ELF file this script can read."""


@dataclass
class VersionNeeds:
    """What one binary needs from the glibc libraries."""

    # GLIBC version -> the libraries (e.g. libc.so.6) that must provide it.
    versions: dict[tuple[int, ...], set[str]] = field(default_factory=dict)
    # GLIBC version -> the undefined dynamic symbols bound to it.
    symbols: dict[tuple[int, ...], set[str]] = field(default_factory=dict)
    # e_machine: 62 x86_64, 183 aarch64.
    machine: int = 0


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def show(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _cstring(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if offset < 0 or offset >= len(data) or end < 0:
        raise NotElf(f"string offset {offset} outside the string table")
    return data[offset:end].decode("ascii", "replace")


def glibc_needs(data: bytes) -> VersionNeeds:
    """The GLIBC_x.y versions (and the symbols bound to them) that an ELF image needs."""
    if data[:4] != b"\x7fELF":
        raise NotElf("no ELF magic")
    elf_class, byte_order = data[4], data[5]
    if elf_class not in (1, 2) or byte_order not in (1, 2):
        raise NotElf(f"unknown ELF class {elf_class} or byte order {byte_order}")
    end = "<" if byte_order == 1 else ">"
    is64 = elf_class == 2
    needs = VersionNeeds()
    try:
        (needs.machine,) = struct.unpack_from(end + "H", data, 0x12)
        if is64:
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
            section = end + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
            section = end + "IIIIIIIIII"
        sections = []
        for index in range(shnum):
            fields = struct.unpack_from(section, data, shoff + index * shentsize)
            # name, type, flags, addr, offset, size, link, info, addralign, entsize
            sections.append(fields)
    except struct.error as error:
        raise NotElf(f"truncated section headers: {error}") from error

    def body(index: int) -> bytes:
        _, _, _, _, offset, size, *_ = sections[index]
        return data[offset : offset + size]

    # Version index (vna_other) -> GLIBC version, for the symbol pass below.
    by_index: dict[int, tuple[int, ...]] = {}
    for _, kind, _, _, offset, _, link, info, _, _ in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strings = body(link)
        entry = offset
        for _ in range(info):  # sh_info: the number of Verneed entries
            try:
                _version, count, file_name, aux, next_entry = struct.unpack_from(
                    end + "HHIII", data, entry
                )
            except struct.error as error:
                raise NotElf(f"truncated .gnu.version_r: {error}") from error
            library = _cstring(strings, file_name)
            vernaux = entry + aux
            for _ in range(count):
                try:
                    _hash, _flags, other, name, next_aux = struct.unpack_from(
                        end + "IHHII", data, vernaux
                    )
                except struct.error as error:
                    raise NotElf(f"truncated .gnu.version_r: {error}") from error
                match = GLIBC_VERSION.match(_cstring(strings, name))
                if match:
                    version = parse_version(match.group(1))
                    needs.versions.setdefault(version, set()).add(library)
                    by_index[other] = version
                if not next_aux:
                    break
                vernaux += next_aux
            if not next_entry:
                break
            entry += next_entry

    dynsym = next((i for i, s in enumerate(sections) if s[1] == SHT_DYNSYM), None)
    versym = next((i for i, s in enumerate(sections) if s[1] == SHT_GNU_VERSYM), None)
    if dynsym is not None and versym is not None and by_index:
        symbols, names = body(dynsym), body(sections[dynsym][6])
        entsize = sections[dynsym][9] or (24 if is64 else 16)
        versions = body(versym)
        for index in range(min(len(symbols) // entsize, len(versions) // 2)):
            (tag,) = struct.unpack_from(end + "H", versions, index * 2)
            version = by_index.get(tag & VERSYM_INDEX_MASK)
            if version is None:
                continue
            (name,) = struct.unpack_from(end + "I", symbols, index * entsize)
            needs.symbols.setdefault(version, set()).add(_cstring(names, name))
    return needs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+", metavar="BINARY")
    parser.add_argument(
        "--max",
        default="2.34",
        type=parse_version,
        help="newest glibc the binaries may need (default 2.34, Lambda's provided.al2023)",
    )
    parser.add_argument(
        "--arch",
        choices=sorted(MACHINES),
        help="the machine every binary must be for (the template's Architecture)",
    )
    args = parser.parse_args(argv)
    limit: tuple[int, ...] = args.max
    wrong_machine = 0

    unreadable = too_new = 0
    for path in args.binaries:
        try:
            with open(path, "rb") as handle:
                needs = glibc_needs(handle.read())
        except OSError as error:
            print(f"ERROR {path}: cannot read: {error.strerror}", file=sys.stderr)
            unreadable += 1
            continue
        except NotElf as error:
            print(f"ERROR {path}: not a readable ELF file: {error}", file=sys.stderr)
            unreadable += 1
            continue
        if args.arch and needs.machine != MACHINES[args.arch]:
            names = {number: name for name, number in MACHINES.items()}
            print(
                f"FAIL {path}: built for {names.get(needs.machine, f'e_machine {needs.machine}')}, "
                f"not {args.arch}: Lambda would answer exec format error. Build with "
                f"`make build ARCH={args.arch}`, or set Architecture to match."
            )
            wrong_machine += 1
            continue
        newest = max(needs.versions, default=None)
        newer = sorted(v for v in needs.versions if v > limit)
        if not newer:
            print(f"ok   {path}: needs glibc {show(newest) if newest else '(none)'}")
            continue
        too_new += 1
        for version in newer:
            libraries = ", ".join(sorted(needs.versions[version]))
            symbols = ", ".join(sorted(needs.symbols.get(version, ()))) or "(no symbol named)"
            print(
                f"FAIL {path}: needs GLIBC_{show(version)} from {libraries}, newer than "
                f"{show(limit)}: {symbols}"
            )
    if too_new:
        print(
            f"{too_new} of {len(args.binaries)} binaries need a glibc newer than {show(limit)} "
            "(Lambda's provided.al2023 has 2.34): built like this, they fail at cold start. "
            "A host linker binds C code to the host's glibc: build for Lambda with `make build` "
            "(zig, glibc 2.34) or `sam build` (cargo-lambda's zig, its default glibc), whatever the host "
            "has, never with `--compiler cargo` on a host newer than glibc 2.34; README "
            "\"Deploy\"."
        )
    if unreadable:
        return 2
    return 1 if too_new or wrong_machine else 0


if __name__ == "__main__":
    sys.exit(main())
