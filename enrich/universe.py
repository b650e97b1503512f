"""The universe of symbols: list, add, remove, deactivate, import from CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import polars as pl

from enrich.catalog import Catalog, WriteBatch, utcnow
from enrich.errors import InputError, InvalidSymbolError
from enrich.lake import Lake
from enrich.schemas import DATASETS, RATES
from enrich.symbols import ASSET_CLASSES, DEMO_UNIVERSE, asset_class_of, validate_symbol


@dataclass(frozen=True)
class ImportReport:
    added: list[str]
    errors: list[tuple[int, str]]  # (line number, message)


def list_symbols(catalog: Catalog, active_only: bool = False,
                 asset_class: str | None = None) -> pl.DataFrame:
    sql = "SELECT symbol, asset_class, name, active, added_at FROM symbols WHERE true"
    params: list = []
    if active_only:
        sql += " AND active"
    if asset_class:
        sql += " AND asset_class = ?"
        params.append(asset_class)
    return catalog.query(sql + " ORDER BY symbol", params)


def _row(symbol: str, asset_class: str | None, name: str | None) -> dict:
    sym = validate_symbol(symbol)
    cls = (asset_class or asset_class_of(sym)).strip().lower()
    if cls not in ASSET_CLASSES:
        raise InvalidSymbolError(
            f"unknown asset class {asset_class!r} for {sym}; use one of {', '.join(ASSET_CLASSES)}"
        )
    return {"symbol": sym, "asset_class": cls, "name": name, "active": True,
            "added_at": utcnow()}


def add_symbols(catalog: Catalog, items: list[tuple[str, str | None, str | None]]) -> list[str]:
    """Add (or re-activate) symbols; raises ``InvalidSymbolError`` before writing anything."""
    rows = [_row(*it) for it in items]
    batch = WriteBatch()
    for r in rows:
        batch.upsert("symbols", r)
    catalog.write(batch)
    return [r["symbol"] for r in rows]


def _known(catalog: Catalog, symbols: list[str]) -> list[str]:
    """``symbols`` validated; raises ``InputError`` naming those not in the universe."""
    syms = list(dict.fromkeys(validate_symbol(s) for s in symbols))
    if not syms:
        raise InputError("no symbol given")
    unknown = unknown_symbols(catalog, syms)
    if unknown:
        raise InputError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not in "
                         "the universe (`python -m enrich symbols list` shows it); "
                         "nothing was changed")
    return syms


def remove_symbols(catalog: Catalog, symbols: list[str]) -> int:
    """Remove from the universe (stored data stays in the lake); refuses, changing nothing,
    if any of ``symbols`` is not in it."""
    syms = _known(catalog, symbols)
    batch = WriteBatch()
    batch.execute(f"DELETE FROM symbols WHERE symbol IN ({','.join('?' * len(syms))})", syms)
    catalog.write(batch)
    return len(syms)


def set_active(catalog: Catalog, symbols: list[str], active: bool) -> None:
    syms = _known(catalog, symbols)
    batch = WriteBatch()
    batch.execute(
        f"UPDATE symbols SET active = ? WHERE symbol IN ({','.join('?' * len(syms))})",
        [active, *syms],
    )
    catalog.write(batch)


def decode_csv(data: bytes, name: str = "the file") -> str:
    """The text of an uploaded or read CSV file: UTF-8, with or without a byte-order mark."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x});"
                         " save it as CSV UTF-8 and import it again") from None


def import_csv(catalog: Catalog, text: str) -> ImportReport:
    """Import ``symbol[,asset_class[,name]]`` lines (a header line is optional).

    Valid lines are added; every invalid line is reported with its line number and cause. Text
    that is not a CSV of symbols at all (a field over 128 KiB, a NUL byte) raises
    ``InputError`` and adds nothing.
    """
    items, errors, seen = [], [], set()
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        rows = list(enumerate(reader, start=1))
    except csv.Error as exc:
        raise InputError(f"line {reader.line_num}: {exc}; this does not look like a CSV of "
                         "symbols, nothing was imported") from None
    for lineno, fields in rows:
        fields = [f.strip() for f in fields]
        if not fields or not any(fields) or fields[0].startswith("#"):
            continue
        if lineno == 1 and fields[0].lower() == "symbol":
            continue
        sym, cls, name = (fields + [None, None])[:3]
        try:
            row = _row(sym, cls or None, name or None)
        except InvalidSymbolError as exc:
            errors.append((lineno, str(exc)))
            continue
        if row["symbol"] in seen:
            errors.append((lineno, f"duplicate symbol {row['symbol']}"))
            continue
        seen.add(row["symbol"])
        items.append((row["symbol"], row["asset_class"], row["name"]))
    added = add_symbols(catalog, items) if items else []
    return ImportReport(added, errors)


def ensure_demo_universe(catalog: Catalog) -> bool:
    """Seed the demo universe into an empty catalog; returns True when it did."""
    if catalog.scalar("SELECT count(*) FROM symbols"):
        return False
    add_symbols(catalog, [(s.symbol, s.asset_class, s.name) for s in DEMO_UNIVERSE])
    return True


def rebuild_from_lake(catalog: Catalog, lake: Lake) -> list[str]:
    """Add every symbol the lake holds data for to an empty universe (a catalog created anew
    next to an existing lake); returns the symbols added. Asset classes and names come from
    the demo universe where it knows the symbol, else from the symbol's form."""
    if catalog.scalar("SELECT count(*) FROM symbols"):
        return []
    held = set()
    for dataset in DATASETS:
        if dataset != RATES.name:  # the Treasury curve (enrich.rates) is no symbol of ours
            held.update(lake.symbols(dataset))
    known = {s.symbol: s for s in DEMO_UNIVERSE}
    items = []
    for raw in sorted(held):
        try:
            sym = validate_symbol(raw)
        except InvalidSymbolError:
            continue  # a folder no enrich version wrote: not a symbol of ours
        info = known.get(sym)
        items.append((sym, info.asset_class if info else None, info.name if info else None))
    return add_symbols(catalog, items) if items else []


def unknown_symbols(catalog: Catalog, symbols: list[str]) -> list[str]:
    """Those of ``symbols`` (canonical forms) that are not in the universe."""
    if not symbols:
        return []
    held = set(catalog.query(
        f"SELECT symbol FROM symbols WHERE symbol IN ({','.join('?' * len(symbols))})",
        list(symbols))["symbol"].to_list())
    return [s for s in symbols if s not in held]
