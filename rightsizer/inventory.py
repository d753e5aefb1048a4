"""Rules every inventory follows, whether it was read from a file (:mod:`rightsizer.inputs`) or listed from Azure
(:mod:`rightsizer.azure.arm_json`): what an id listed twice means.

A bad entry is never dropped: it is a :class:`~rightsizer.domain.VmInfo` with its ``problem`` set, shown as a
skipped row (gate ``inventory``), so one bad VM never hides or stops the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rightsizer.domain import VmInfo
from rightsizer.quoting import quote_value


def flag_duplicate_ids(vms: Sequence[VmInfo], *, source: str) -> list[VmInfo]:
    """``vms`` (entry ``i`` of the inventory is ``vms[i]``) with every id listed twice made a problem.

    Which entry tells the truth about that VM is unknown, so neither is sized; the later one gets a row id of its
    own (``<id>#inventory-entry-<i>``) so both rows are shown and no two rows share an id. An entry that already
    has a problem keeps it (its id still counts)."""
    out = list(vms)
    first_index: dict[str, int] = {}
    for i, vm in enumerate(vms):
        j = first_index.setdefault(vm.id, i)
        if j == i:
            continue
        twice = f"{source}: duplicate id {quote_value(vm.id)}: listed as VM #{j} and VM #{i}; neither is sized"
        if out[j].problem is None:
            out[j] = replace(out[j], problem=twice)
        out[i] = replace(vm, id=f"{vm.id}#inventory-entry-{i}", problem=vm.problem or twice)
    return out
