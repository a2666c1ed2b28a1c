"""The report's words, in Chinese and English (one table, shared by every format)."""

from __future__ import annotations

LABELS: dict[str, tuple[str, str]] = {
    "title": ("网格上报统计", "Grid report figures"),
    "station": ("派出所", "Station"),
    "period": ("统计期间", "Period"),
    "generated_at": ("生成时间", "Generated at"),
    "zone": ("时区", "Time zone"),
    "reports": ("上报", "Reports"),
    "total": ("合计", "Total"),
    "accepted": ("受理", "Accepted"),
    "duplicate_id": ("重复（同一编号）", "Duplicate (event id)"),
    "duplicate_household": ("重复（同一住户）", "Duplicate (household)"),
    "rejected": ("退回", "Rejected"),
    "by_type": ("按类型", "By type"),
    "type": ("类型", "Type"),
    "move_in": ("迁入", "Move in"),
    "move_out": ("迁出", "Move out"),
    "tenant_change": ("租客变更", "Tenant change"),
    "info_update": ("信息更新", "Info update"),
    "-": ("无法识别", "Unreadable"),
    "top_reasons": ("主要退回原因", "Top rejection reasons"),
    "reason": ("原因", "Reason"),
    "count": ("数量", "Count"),
    "fates": ("受理后的处理", "What became of accepted reports"),
    "received": ("已签收", "Received"),
    "verified": ("已核实", "Verified"),
    "declined": ("被退转", "Declined"),
    "escalated": ("已升级", "Escalated"),
    "undeliverable": ("无法送达", "Undeliverable"),
    "resend": ("重发", "Re-sends"),
    "open": ("期末未处理", "Still open at period end"),
    "latency": ("处理时长", "How fast"),
    "to_received": ("上报→签收", "Report → received"),
    "to_verified": ("上报→核实", "Report → verified"),
    "median": ("中位数", "Median"),
    "p90": ("90%分位", "90th percentile"),
    "officers": ("民警", "Officers"),
    "officer": ("民警", "Officer"),
    "name": ("姓名", "Name"),
    "registrar_copy": ("抄送登记员", "Registrar copies"),
    "grids": ("网格", "Grids"),
    "grid": ("网格", "Grid"),
    "members": ("网格员", "Grid members"),
    "member": ("网格员", "Member"),
    "silent_grids": ("期间无上报的网格", "Grids that sent nothing"),
    "silent_members": ("期间无上报的网格员", "Members who sent nothing"),
    "flags": ("预警标记", "Flags raised"),
    "high_turnover": ("频繁变更", "High turnover"),
    "person_elsewhere": ("人员他处出现", "Person elsewhere"),
    "series": ("逐日趋势", "Day by day"),
    "series_weekly": ("逐周趋势", "Week by week"),
    "day": ("日期", "Day"),
    "none": ("无", "None"),
    "no_detail": (
        "全省视图：网格、网格员、民警明细请用 --station 查询",
        "Province view: grids, members and officers with --station",
    ),
}


def zh(key: str) -> str:
    """The Chinese label (the key itself when there is none)."""
    return LABELS.get(key, (key, key))[0]


def en(key: str) -> str:
    """The English label (the key itself when there is none)."""
    return LABELS.get(key, (key, key))[1]


def both(key: str) -> str:
    """`受理 Accepted`."""
    z, e = LABELS.get(key, (key, key))
    return e if z == e else f"{z} {e}"
