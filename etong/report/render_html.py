"""The report as one self-contained HTML page (DESIGN §10): no network, no web fonts, inline
CSS and SVG, Chinese and English labels, printable on A4 (one station a page)."""

from __future__ import annotations

from collections.abc import Iterator
from html import escape

from etong.report.build import OFFICER_MEASURES, Figures, Latency, Report
from etong.report.labels import en, zh
from etong.report.percentiles import human_duration
from etong.report.svg import bar_chart, series_chart

_REPORT_KEYS = ("total", "accepted", "duplicate_id", "duplicate_household", "rejected")
_FATE_KEYS = ("received", "verified", "declined", "escalated", "undeliverable", "resend", "open")

_CSS = """
:root { color-scheme: light; }
body { font-family: "Noto Sans CJK SC", "WenQuanYi Micro Hei", "Microsoft YaHei",
  "PingFang SC", sans-serif; margin: 24px; color: #1b1f24; font-size: 13px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 18px 0 6px;
  border-bottom: 2px solid #234; } h3 { font-size: 14px; margin: 14px 0 4px; }
.meta { color: #445; margin-bottom: 10px; } .en { color: #556; font-weight: normal; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { border: 1px solid #bcc3cc; padding: 2px 6px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eef1f5; font-weight: 600; }
.cards { display: flex; gap: 10px; flex-wrap: wrap; }
.card { border: 1px solid #bcc3cc; border-radius: 4px; padding: 6px 10px; min-width: 110px; }
.card .v { font-size: 20px; font-weight: 700; }
.cols { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
svg text { font-size: 10px; fill: #1b1f24; }
@page { size: A4; margin: 12mm; }
@media print {
  body { margin: 0; font-size: 10.5px; }
  section.station { break-before: page; } section.station:first-of-type { break-before: auto; }
  table, svg { break-inside: avoid; }
}
"""


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    names = ", ".join(f"{f.name} ({f.station})" for f in report.stations) or "-"
    body = [
        f"<h1>{_l('title')}</h1>",
        '<div class="meta">',
        f"<div>{_l('station')}: <b>{escape(names)}</b></div>",
        f'<div>{_l("period")}: <b data-figure="period">{report.first} – {report.last}</b> '
        f"({escape(report.zone)})</div>",
        f"<div>{_l('generated_at')}: {escape(report.generated_at)}</div>",
        "</div>",
    ]
    for figures in [*report.stations, *([report.total] if report.total else [])]:
        body.extend(_station(figures, weekly=report.weekly))
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(zh('title'))} {report.first} – {report.last}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _l(key: str) -> str:
    """A bilingual label: the Chinese, then the English in grey."""
    z, e = zh(key), en(key)
    return escape(e) if z == e else f'{escape(z)} <span class="en">{escape(e)}</span>'


def _station(f: Figures, *, weekly: bool) -> Iterator[str]:
    sid = escape(f.station)
    title = escape(f.name) + ("" if f.station == "*" else f" ({sid})")
    yield f'<section class="station" data-station="{sid}"><h2>{title}</h2>'
    yield '<div class="cards">'
    for key, value in (
        ("reports", f.reports["total"]),
        ("accepted", f.reports["accepted"]),
        ("received", f.fates["received"]),
        ("verified", f.fates["verified"]),
        ("open", f.fates["open"]),
    ):
        yield (
            f'<div class="card"><div>{_l(key)}</div>'
            f'<div class="v" data-figure="{key}">{value}</div></div>'
        )
    yield "</div>"
    yield from _reports(f)
    yield from _fates(f)
    if not f.detail and f.station != "*":
        yield f'<p class="note">{_l("no_detail")}</p></section>'
        return
    if f.detail:
        yield from _officers(f)
        yield from _grids(f)
    label = "series_weekly" if weekly else "series"
    yield f"<h3>{_l(label)}</h3>"
    yield series_chart(
        [(p.first, p.reports, p.verified) for p in f.series],
        (f"{zh('reports')} {en('reports')}", f"{zh('verified')} {en('verified')}"),
    )
    yield "</section>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(rows_) + "</tr>" for rows_ in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _n(value: object, figure: str = "") -> str:
    attr = f' data-figure="{escape(figure)}"' if figure else ""
    return f'<td class="n"{attr}>{escape(str(value))}</td>'


def _t(text: str) -> str:
    return f"<td>{escape(text)}</td>"


def _reports(f: Figures) -> Iterator[str]:
    yield f'<div class="cols"><div><h3>{_l("reports")}</h3>'
    yield _table(
        [_l("type"), *(_l(k) for k in _REPORT_KEYS)],
        [
            [f"<td>{_l(kind)}</td>", _n(sum(c.values())), *(_n(c[k]) for k in _REPORT_KEYS[1:])]
            for kind, c in f.by_type.items()
        ]
        + [[f"<td><b>{_l('total')}</b></td>", *(_n(f.reports[k], k) for k in _REPORT_KEYS)]],
    )
    if f.top_reasons:
        yield f"<h3>{_l('top_reasons')}</h3>"
        yield _table([_l("reason"), _l("count")], [[_t(r), _n(n)] for r, n in f.top_reasons])
    flags = [[f"<td>{_l(k)}</td>", _n(n)] for k, n in f.flags.items()]
    flags.append([f"<td>{_l('registrar_copy')}</td>", _n(f.registrar_copies, "registrar_copy")])
    yield f"<h3>{_l('flags')}</h3>" + _table([_l("flags"), _l("count")], flags)
    yield "</div>"


def _fates(f: Figures) -> Iterator[str]:
    yield f"<div><h3>{_l('fates')}</h3>"
    yield bar_chart([(f"{zh(k)} {en(k)}", f.fates[k]) for k in _FATE_KEYS])
    yield f"<h3>{_l('latency')}</h3>"
    yield _table(
        ["", _l("count"), _l("median"), _l("p90")],
        [
            [f"<td>{_l(k)}</td>", *_lat(lat)]
            for k, lat in (("to_received", f.to_received), ("to_verified", f.to_verified))
        ],
    )
    yield "</div></div>"


def _lat(lat: Latency) -> list[str]:
    return [_n(lat.n), _n(human_duration(lat.median_s)), _n(human_duration(lat.p90_s))]


def _officers(f: Figures) -> Iterator[str]:
    if not f.officers:
        return
    keys = OFFICER_MEASURES
    yield f"<h3>{_l('officers')}</h3>"
    yield _table(
        [_l("officer"), _l("name"), *(_l(k) for k in keys), _l("to_received"), _l("to_verified")],
        [
            [
                _t(o.id),
                _t(o.name),
                *(_n(getattr(o, k)) for k in keys),
                _n(
                    f"{human_duration(o.to_received.median_s)} / "
                    f"{human_duration(o.to_received.p90_s)}"
                ),
                _n(
                    f"{human_duration(o.to_verified.median_s)} / "
                    f"{human_duration(o.to_verified.p90_s)}"
                ),
            ]
            for o in f.officers
        ],
    )


def _grids(f: Figures) -> Iterator[str]:
    yield f'<div class="cols"><div><h3>{_l("grids")}</h3>'
    yield _table(
        [_l("grid"), _l("name"), _l("reports"), _l("accepted")],
        [[_t(g.id), _t(g.name), _n(g.reports), _n(g.accepted)] for g in f.grids],
    )
    yield f"<h3>{_l('silent_grids')}</h3>"
    yield (
        _table([_l("grid"), _l("name")], [[_t(g.id), _t(g.name)] for g in f.silent_grids])
        + f"<div>{_l('total')}: "
        + f'<span data-figure="silent_grids">{len(f.silent_grids)}</span></div>'
    )
    yield f"</div><div><h3>{_l('members')}</h3>"
    yield _table(
        [_l("member"), _l("name"), _l("grid"), _l("reports"), _l("accepted")],
        [[_t(m.id), _t(m.name), _t(m.grid), _n(m.reports), _n(m.accepted)] for m in f.members],
    )
    yield f"<h3>{_l('silent_members')}</h3>"
    yield _table(
        [_l("member"), _l("name"), _l("grid")],
        [[_t(m.id), _t(m.name), _t(m.grid)] for m in f.silent_members],
    )
    yield "</div></div>"
