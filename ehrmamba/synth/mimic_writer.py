"""Write a MIMIC-flavoured cohort: the 30 gzipped NDJSON files of MIMIC-IV on FHIR.

Patient ``k`` of the cohort is the ``k``-th simulated history that MIMIC would contain (see
:func:`ehrmamba.synth.mimic.is_eligible`), so a cohort of n patients is a prefix of one of n + 1.
Histories are simulated and rendered in worker processes (chunks of consecutive indices, results
consumed in index order) and compressed as one gzip stream per file in the parent, so the output
is byte-identical for any number of workers, and memory is bounded by the chunks in flight.
As with :func:`ehrmamba.synth.write_cohort`, files are written to a staging directory first and
replace every ``*.json.gz`` / ``*.ndjson.gz`` of ``out_dir`` when complete.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from tqdm import tqdm
from zlib_ng import zlib_ng

from .mimic import reference_resources, render_mimic_patient
from .mimic_codes import FILE_SUFFIX, FILES
from .timeline import simulate_patient

#: gzip level (as the default flavour: fast, a modestly larger file)
COMPRESSLEVEL = 1
_COHORT_SUFFIXES = (".json.gz", ".ndjson.gz")
CHUNK = 64  # simulated histories per worker task


@dataclass
class MimicCohortSummary:
    """What :func:`write_mimic_cohort` wrote: resources per file (all 30, sorted by name)."""

    n_patients: int
    file_counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def resource_counts(self) -> dict[str, int]:
        """Resources per FHIR resource type (several files share a type)."""
        counts: dict[str, int] = {}
        for stem, n in self.file_counts.items():
            rtype = FILES[stem][0]
            counts[rtype] = counts.get(rtype, 0) + n
        return dict(sorted(counts.items()))


def _render_chunk(seed: int, start: int, stop: int) -> list[tuple[int, dict[str, bytes]]]:
    """Simulate indices ``start..stop-1``; each eligible patient as NDJSON bytes per file."""
    out = []
    dumps = orjson.dumps
    for index in range(start, stop):
        files = render_mimic_patient(simulate_patient(index, seed))
        if files is None:
            continue
        out.append(
            (
                index,
                {
                    stem: b"".join(dumps(r) + b"\n" for r in resources)
                    for stem, resources in files.items()
                    if resources
                },
            )
        )
    return out


def iter_mimic_patients(
    seed: int, workers: int = 1, start_index: int = 0
) -> Iterator[tuple[int, dict[str, bytes]]]:
    """Eligible patients of cohort ``seed`` in index order, without end: (index, bytes per file)."""
    if workers <= 1:  # in this process, a few histories at a time: nothing simulated in vain
        start = start_index
        while True:
            yield from _render_chunk(seed, start, start + 8)
            start += 8
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future] = deque()
    next_start = start_index
    try:
        while True:
            while len(pending) < 2 * workers:
                pending.append(executor.submit(_render_chunk, seed, next_start, next_start + CHUNK))
                next_start += CHUNK
            yield from pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def write_mimic_cohort(
    out_dir: Path,
    n_patients: int,
    seed: int,
    *,
    workers: int = 1,
    progress: bool = False,
) -> MimicCohortSummary:
    """Generate ``n_patients`` MIMIC-shaped patients of cohort ``seed`` into ``out_dir``.

    Writes exactly the 30 files ``Mimic<Profile>.ndjson.gz`` of MIMIC-IV on FHIR, references as
    ``<Type>/<id>``. A file with no resource for this cohort (a micro-organism file of a handful
    of patients) is written empty. ``workers`` > 1 simulates in that many processes (spawned:
    a script calling this needs an ``if __name__ == "__main__":`` guard).
    """
    if n_patients < 0:
        raise ValueError("n_patients must be >= 0")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    names = [stem + FILE_SUFFIX for stem in FILES]
    counts = dict.fromkeys(FILES, 0)
    try:
        handles = {stem: open(staging / (stem + FILE_SUFFIX), "wb") for stem in FILES}  # noqa: SIM115
        # wbits 31: a gzip stream (header without name or time, so the bytes are reproducible)
        zs = {stem: zlib_ng.compressobj(COMPRESSLEVEL, zlib_ng.DEFLATED, 31) for stem in FILES}
        try:
            for stem, resources in reference_resources().items():
                data = b"".join(orjson.dumps(r) + b"\n" for r in resources)
                handles[stem].write(zs[stem].compress(data))
                counts[stem] += len(resources)
            if n_patients:
                bar = tqdm(total=n_patients, disable=not progress, unit="patient", desc="MIMIC")
                with bar:
                    written = 0
                    with closing(iter_mimic_patients(seed, workers)) as patients:
                        for _, files in patients:
                            for stem, data in files.items():
                                handles[stem].write(zs[stem].compress(data))
                                counts[stem] += data.count(b"\n")
                            written += 1
                            bar.update(1)
                            if written == n_patients:
                                break
        finally:
            for stem, handle in handles.items():
                handle.write(zs[stem].flush())
                handle.close()
        out_dir.mkdir(parents=True, exist_ok=True)
        keep = set(names)
        for old in out_dir.iterdir():
            if old.name.endswith(_COHORT_SUFFIXES) and old.name not in keep and old.is_file():
                old.unlink()
        for name in names:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MimicCohortSummary(
        n_patients, dict(sorted(counts.items())), sorted(out_dir / n for n in names)
    )
