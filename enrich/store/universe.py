"""The universe of symbols: list, add, remove, deactivate, import from CSV.

``add_verified`` (``symbols add``, the Settings page) asks the provider's ticker reference
first (``enrich.identity``): an unknown ticker is refused, nothing is added; a known one is
stored as the provider spells it, with its listing, delisting, FIGIs and ticker spans. Symbols
are case-sensitive; a name given in another case finds the held symbol when only one matches
(``match_symbols``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from enrich import identity
from enrich.errors import InputError, InvalidSymbolError, NotFoundError
from enrich.schemas import DATASETS, RATES
from enrich.store.catalog import Catalog, WriteBatch, insert_rows, transaction, utcnow
from enrich.store.lake import Lake
from enrich.symbols import ASSET_CLASSES, DEMO_UNIVERSE, asset_class_of, validate_symbol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from enrich.identity import TickerReference
    from enrich.providers import Provider


@dataclass(frozen=True)
class AddReport:
    """What adding symbols did: each symbol asked for is in exactly one list."""

    added: list[str]  # new in the universe
    present: list[str]  # already in it, active: nothing changed
    reactivated: list[str]  # already in it, deactivated: active again, nothing else changed
    # the provider's ticker reference of each symbol added (``add_verified``)
    references: list[Added] = field(default_factory=list)

    @property
    def in_universe(self) -> list[str]:
        return [*self.added, *self.reactivated, *self.present]

    def describe(self) -> str:
        """``added NVDA; already present: AAPL (unchanged)`` — one line for a terminal."""
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        if self.reactivated:
            parts.append(f"reactivated {', '.join(self.reactivated)} (name and added date "
                         "kept)")
        if self.present:
            parts.append(f"already present: {', '.join(self.present)} (unchanged)")
        return "; ".join(parts) or "nothing to add"


@dataclass(frozen=True)
class ImportReport:
    added: list[str]
    errors: list[tuple[int, str]]  # (line number, message): refused lines
    present: list[str] = field(default_factory=list)  # already in the universe: unchanged
    reactivated: list[str] = field(default_factory=list)


def list_symbols(catalog: Catalog, active_only: bool = False,
                 asset_class: str | None = None) -> pl.DataFrame:
    """The universe; ``delisted_on`` marks a delisted symbol (kept, no longer refreshed),
    ``history_from`` the first day its history may have (listing or ticker change)."""
    sql = ("SELECT symbol, asset_class, name, active, added_at, delisted_on, history_from "
           "FROM symbols WHERE true")
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


def add_symbols(catalog: Catalog, items: list[tuple[str, str | None, str | None]],
                extra: dict[str, dict] | None = None) -> AddReport:
    """Add symbols to the universe without ever changing one already there.

    A symbol already in the universe keeps its name, asset class and added date (it is
    reported ``present``); a deactivated one is only made active again (``reactivated``).
    Every item is validated first: ``InvalidSymbolError`` is raised before writing anything.
    The read and the writes happen in one transaction under the catalog's lock, so two
    processes adding the same symbol cannot overwrite each other. ``extra`` gives further
    ``symbols`` columns of a new symbol (every mapping the same keys), written with it.
    """
    first: dict[str, dict] = {}
    for r in [_row(*it) for it in items]:
        # a symbol given twice: its first occurrence
        first.setdefault(r["symbol"], {**r, **(extra or {}).get(r["symbol"], {})})
    rows = list(first.values())
    if not rows:
        return AddReport([], [], [])
    syms = [r["symbol"] for r in rows]
    marks = ",".join("?" * len(syms))
    cols = ("symbol", "asset_class", "name", "active", "added_at",
            *next(iter((extra or {}).values()), {}))
    with catalog.connect() as con:
        held = dict(con.execute(f"SELECT symbol, active FROM symbols WHERE symbol IN ({marks})",
                                syms).fetchall())
        new = [r for r in rows if r["symbol"] not in held]
        sleeping = [s for s in syms if s in held and not held[s]]
        with transaction(con):
            if new:
                # One statement through an Arrow frame: DuckDB's executemany runs one INSERT
                # a row (5,000 symbols took ~17 s).
                insert_rows(con, "symbols", [{c: r.get(c) for c in cols} for r in new])
            if sleeping:
                con.execute(f"UPDATE symbols SET active = true WHERE symbol IN "
                            f"({','.join('?' * len(sleeping))})", sleeping)
    return AddReport([r["symbol"] for r in new], [s for s in syms if held.get(s)], sleeping)


@dataclass(frozen=True)
class Added:
    symbol: str
    reference: TickerReference


def add_verified(catalog: Catalog, provider: Provider,
                 items: list[tuple[str, str | None, str | None]]) -> AddReport:
    """Add symbols after the provider's ticker reference confirmed each (``symbols add``).

    A symbol already in the universe as typed is left as it is, as ``add_symbols``
    leaves it (``present`` or ``reactivated``), without asking the provider. Each new one is
    stored as the provider spells it (a name typed in another case is looked up as typed,
    then upper-cased), with its reference (``enrich.identity.to_row``, in the report's
    ``references``); its name and class default to the reference's. Raises ``InputError``
    naming every ticker the reference does not know, or whose class contradicts it, before
    anything is written."""
    syms = [validate_symbol(raw) for raw, _, _ in items]
    # Held exactly as typed (another case may be another ticker: KIMpL is not KIMPL).
    marks = ",".join("?" * len(syms))
    held = set(catalog.query(f"SELECT symbol FROM symbols WHERE symbol IN ({marks})", syms)
               ["symbol"].to_list()) if syms else set()
    kept: list[tuple[str, str | None, str | None]] = []
    refs: list[tuple[TickerReference, str | None, str | None]] = []
    problems: list[str] = []
    for sym, (_, cls, name) in zip(syms, items, strict=True):
        if sym in held:
            kept.append((sym, cls, name))
            continue
        try:
            ref = _lookup(provider, sym)
        except NotFoundError as exc:
            problems.append(f"{sym} is not a ticker {provider.name} knows ({exc})")
            continue
        given = (cls or "").strip().lower() or None
        if given and given != ref.asset_class and {given, ref.asset_class} != {"stocks", "etfs"}:
            problems.append(f"{ref.ticker} is {ref.asset_class} ({ref.market} market, type "
                            f"{ref.type}) in {provider.name}'s reference, not {given}")
            continue
        refs.append((ref, given, name))
    if problems:
        raise InputError("; ".join(problems) + "; nothing was added")
    at = utcnow()
    report = add_symbols(
        catalog, [*kept, *((ref.ticker, cls or ref.asset_class, name or ref.name)
                           for ref, cls, name in refs)],
        extra={ref.ticker: identity.to_row(ref, at) for ref, _, _ in refs})
    added = set(report.added)
    references = [Added(ref.ticker, ref) for ref, _, _ in refs if ref.ticker in added]
    return AddReport(report.added, report.present, report.reactivated, references)


def _lookup(provider: Provider, sym: str) -> TickerReference:
    try:
        return provider.ticker_reference(sym)
    except NotFoundError:
        if sym.upper() == sym:
            raise
        return provider.ticker_reference(sym.upper())


def describe_added(added: Added) -> str:
    """One line about a verified symbol: what it is and what history it will have."""
    ref, ident = added.reference, added.reference.identity()
    what = f"{added.symbol} ({ref.name or 'no name'}; {ref.market} {ref.type or ''}".rstrip()
    parts = [what + ")"]
    if ident.delisted is not None:
        parts.append(f"delisted: last traded {ident.delisted.isoformat()}; its history up to "
                     "then is fetched once, then it is no longer refreshed")
    if ident.renamed:
        spans = ", ".join(f"{s.ticker} from {s.start.isoformat() if s.start else 'listing'}"
                          for s in ident.spans)
        parts.append(f"traded as {spans}: each ticker's history is fetched over its own span")
    elif ident.history_from is not None:
        parts.append(f"history from {ident.history_from.isoformat()}")
    return "; ".join(parts)


def match_symbols(catalog: Catalog, symbols: list[str]) -> tuple[list[str], list[str]]:
    """(the held spelling of each of ``symbols``, those not held). A symbol matches itself,
    else the one held symbol equal to it but for case (``kimpl`` finds ``KIMpL``)."""
    if not symbols:
        return [], []
    return match_held(catalog.query("SELECT symbol FROM symbols")["symbol"].to_list(), symbols)


def match_held(held: Iterable[str], symbols: list[str]) -> tuple[list[str], list[str]]:
    """``match_symbols`` against the symbols ``held`` (a universe read before)."""
    held = list(held)
    exact = set(held)
    folded: dict[str, list[str]] = {}
    for h in held:
        folded.setdefault(h.lower(), []).append(h)
    out, unknown = [], []
    for s in symbols:
        if s in exact:
            out.append(s)
        elif len(folded.get(s.lower(), [])) == 1:
            out.append(folded[s.lower()][0])
        else:
            unknown.append(s)
    return out, unknown


def _known(catalog: Catalog, symbols: list[str]) -> list[str]:
    """``symbols`` validated; raises ``InputError`` naming those not in the universe."""
    syms = list(dict.fromkeys(validate_symbol(s) for s in symbols))
    if not syms:
        raise InputError("no symbol given")
    syms, unknown = match_symbols(catalog, syms)
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


def set_active(catalog: Catalog, symbols: list[str], active: bool) -> list[str]:
    """(De)activate ``symbols`` (any case finds the held one); returns them as held."""
    syms = _known(catalog, symbols)
    batch = WriteBatch()
    batch.execute(
        f"UPDATE symbols SET active = ? WHERE symbol IN ({','.join('?' * len(syms))})",
        [active, *syms],
    )
    catalog.write(batch)
    return syms


def decode_csv(data: bytes, name: str = "the file") -> str:
    """The text of an uploaded or read CSV file: UTF-8, with or without a byte-order mark."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x});"
                         " save it as CSV UTF-8 and import it again") from None


def import_csv(catalog: Catalog, text: str) -> ImportReport:
    """Import ``symbol[,asset_class[,name]]`` lines (a header line is optional).

    Valid lines are added; symbols already in the universe are left as they are (name and
    added date kept) and reported apart; every invalid line (more than three fields among
    them: an unquoted comma in a name would cut it) is refused and reported with its line
    number and cause. Text that is not a CSV of symbols at all (a field over 128 KiB, a
    NUL byte) raises ``InputError`` and adds nothing.
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
        if any(fields[3:]):  # a name's comma unquoted, or another file's columns
            errors.append((lineno, f"{len(fields)} fields, at most 3 expected "
                                   "(symbol,asset_class,name): quote a name that holds a "
                                   'comma ("Acme, Inc.")'))
            continue
        sym, cls, name = (fields + ["", ""])[:3]
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
    report = add_symbols(catalog, items) if items else AddReport([], [], [])
    return ImportReport(report.added, errors, report.present, report.reactivated)


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
        if dataset != RATES.name:  # the Treasury curve (enrich.quant.rates) is no symbol of ours
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
    return add_symbols(catalog, items).added if items else []


def unknown_symbols(catalog: Catalog, symbols: list[str]) -> list[str]:
    """Those of ``symbols`` that are not in the universe (in any case: ``match_symbols``)."""
    return match_symbols(catalog, list(symbols))[1]
