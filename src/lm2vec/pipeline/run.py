"""Running a plan: its stages in order, each recorded in RUN/pipeline.json so that a re-run skips or resumes."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lm2vec.artifacts import (
    RUN_RECORD,
    ForeignFolderError,
    claim_folder,
    read_record,
    remove_recorded,
    write_json_atomic,
)
from lm2vec.console import stage_log
from lm2vec.errors import LM2VecError
from lm2vec.pipeline.plan import Plan, plan_run
from lm2vec.stages import duration

LOGS_DIR = "logs"
RUN_FORMAT = "lm2vec-run"
# A running stage's wall time is written this often, so a killed attempt still counts.
HEARTBEAT_SECONDS = 10.0
# How long a torchrun process waits to see the record process 0 wrote (network file systems cache what they list).
SHARED_FOLDER_WAIT_SECONDS = 120.0
SHARED_FOLDER_WAIT_ENV = "LM2VEC_SHARED_FOLDER_WAIT"


@dataclass
class StageRecord:
    status: str = "pending"  # pending, running, done, failed
    options_hash: str = ""
    seconds: float = 0.0  # wall time, summed over resumed attempts
    attempts: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: list[str] = field(default_factory=list)  # paths under the run folder this stage wrote


class PipelineError(LM2VecError, RuntimeError):
    """The run cannot go on as asked; the message says what to do."""


class Pipeline:
    """Runs a plan stage by stage, recording each in RUN/pipeline.json; the context each stage's `run` gets."""

    def __init__(self, plan: Plan, echo: Callable[[str], None] = print, verbose: bool = False):
        self.plan = plan
        self.verbose = verbose  # third-party logs and warnings on the console too, not only in logs/STAGE.log
        self.dir = plan.run_dir
        self.echo = echo
        self.state = _distributed_state()
        self._records_lock = threading.Lock()
        # Under torchrun, each launch's mark in the record: every process must read the record process 0 wrote.
        self._launch = secrets.token_hex(8) if self.state is not None else None
        self.records = self._read_records() if self.is_main else {}
        if self.state is not None or not (self.dir / RUN_RECORD).is_file():
            # Marked lm2vec's before anything is written into it (a dry run's shrunk model), so that a run killed
            # before its first stage leaves a folder the next run may claim.
            self._write_records()
        if self.state is not None:
            self._check_every_process_sees_the_run_folder()

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def _read_records(self, saved: dict[str, Any] | None = None) -> dict[str, StageRecord]:
        """The stages' records: from `saved` (what another process wrote), else from the folder the main process
        claims."""
        if saved is None:
            saved = claim_folder(self.dir, RUN_RECORD, RUN_FORMAT)
        stages = (saved or {}).get("stages", {})
        records = {stage: StageRecord(**stages.get(stage, {})) for stage in self.plan.stages}
        for stage, record in records.items():
            if record.status != "pending" and "outputs" not in stages.get(stage, {}):
                record.outputs = self._outputs(stage)  # a run from before outputs were recorded
        return records

    def _outputs(self, stage: str) -> list[str]:
        """The paths, relative to the run folder, that `stage` writes."""
        return [*self.plan.stage(stage).outputs(self.plan), f"{LOGS_DIR}/{stage}.log"]  # + its third-party logs

    def _write_records(self) -> None:
        if not self.is_main:
            return
        content = {
            "format": RUN_FORMAT,
            "recipe": str(self.plan.recipe_path),
            "run": asdict(self.plan.run),
            "stages": {stage: asdict(record) for stage, record in self.records.items()},
        }
        if self._launch is not None:
            content["launch"] = self._launch
        with self._records_lock:
            write_json_atomic(self.dir / RUN_RECORD, content)

    def run(
        self,
        redo: str | None = None,
        until: str | None = None,
        only: str | None = None,
        with_inputs: bool = False,
        gpu_memory: str | None = None,
    ) -> dict[str, StageRecord]:
        """Every stage not done yet, in order (up to `until`); with `only`, that one stage alone, and with
        `with_inputs` also the stages it reads from (and theirs) that are not done yet. A training stage to run
        whose memory estimate exceeds the device's (`gpu_memory` per GPU, else the GPU's own, on a CPU the RAM)
        is refused first."""
        stages = self.plan.stages
        for name in (redo, until, only):
            if name is not None and name not in stages:
                raise PipelineError(f"{name!r} is not a stage of this recipe; its stages: {', '.join(stages)}.")
        if only is not None and until is not None:
            raise PipelineError("--only runs one stage; --until does not go with it.")
        if redo is not None:
            self._reset_from(redo)
        self._check_finished_stages(stages if only is None else stages[: stages.index(only) + 1])
        selected = None if only is None else {only}
        if only is not None and with_inputs:
            selected |= self._inputs_of(only)
        elif only is not None:
            self._check_needs(only)
        last = stages.index(until) + 1 if until is not None else len(stages)
        self._check_memory([s for s in stages[:last] if selected is None or s in selected], gpu_memory)
        for number, stage in enumerate(stages, start=1):
            if selected is not None and stage not in selected:
                continue
            record = self.records[stage]
            header = f"[{number}/{len(stages)}] {stage}"
            if record.status == "done":
                self.echo(f"{header}: done earlier ({duration(record.seconds)}), skipped")
            else:
                self._run_stage(stage, header)
            if stage == until:
                self.echo(f"stopped after {stage} (--until); run again without --until to go on")
                break
        return self.records

    def _check_memory(self, stages: Sequence[str], gpu_memory: str | None) -> None:
        """Refuse, before any model loads, a training stage among `stages` (not done yet) that cannot fit."""
        import torch

        from lm2vec.pipeline.estimate import check_fits, estimate_plan, target_for

        pending = [stage for stage in stages if self.records[stage].status != "done"]
        target = target_for(1 if torch.cuda.is_available() else 0, gpu_memory)
        check_fits(estimate_plan(self.plan, target, pending, mining=False), target)

    def _check_finished_stages(self, stages: Sequence[str]) -> None:
        for stage in stages:
            record = self.records[stage]
            hashes = (self.plan.hashes[stage], self.plan.legacy_hashes.get(stage))
            if record.status in ("done", "running", "failed") and record.options_hash not in hashes:
                raise PipelineError(
                    f"The options of stage {stage!r} (or of a stage before it) changed since {self.dir} ran it. "
                    f"Re-run from there with --redo {stage}, or choose a new --out."
                )

    def _inputs_of(self, stage: str) -> set[str]:
        """The stages `stage` reads from, and the ones they read from, transitively."""
        found: set[str] = set()
        pending = list(self.plan.stage(stage).needs(self.plan))
        while pending:
            if (name := pending.pop()) not in found:
                found.add(name)
                pending += self.plan.stage(name).needs(self.plan)
        return found

    def _check_every_process_sees_the_run_folder(self) -> None:
        """Process 0 has written its record with this launch's mark; every process reads the stages from it. A
        process that does not see it (a node whose run folder is its own disk, not the shared one) would run other
        stages than process 0 and wait forever in a collective, so all of them stop here together, with the fix."""
        import torch.distributed as dist

        mark = [self._launch]
        dist.broadcast_object_list(mark, src=0)  # process 0 wrote its record before it got here
        self._launch = mark[0]
        seen = self.is_main
        deadline = time.monotonic() + float(os.environ.get(SHARED_FOLDER_WAIT_ENV, SHARED_FOLDER_WAIT_SECONDS))
        while not seen:
            try:
                saved = read_record(self.dir, RUN_RECORD, RUN_FORMAT)
            except ForeignFolderError:  # another file of that name: not process 0's folder either; stop with the rest
                saved = None
            if seen := saved is not None and saved.get("launch") == self._launch:
                self.records = self._read_records(saved)
            elif time.monotonic() > deadline:
                break
            else:
                time.sleep(1.0)  # a network file system may show the new record a little later
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, (seen, socket.gethostname()))
        if blind := [f"{rank} (on {host})" for rank, (ok, host) in enumerate(everyone) if not ok]:
            raise PipelineError(
                f"process(es) {', '.join(blind)} cannot see the run folder {self.dir} that process 0 writes: under "
                "torchrun on several machines it must be on a file system they all share (NFS, Lustre, a cloud "
                "file share), at the same path, as every stage reads what the stages before it wrote there."
            )

    def _check_needs(self, stage: str) -> None:
        """`--only stage`: the stages whose outputs it reads must be done."""
        if missing := [name for name in self.plan.stage(stage).needs(self.plan) if self.records[name].status != "done"]:
            raise PipelineError(
                f"{stage} reads what {', '.join(missing)} write(s), not done in {self.dir} yet: run "
                f"`lm2vec run {self.plan.recipe_path} --until {missing[-1]}` first (with the same --out and --set)."
            )

    def _reset_from(self, stage: str) -> None:
        for later in self.plan.stages[self.plan.stages.index(stage) :]:
            if self.is_main:
                for path in remove_recorded(self.dir, self.records[later].outputs):
                    self.echo(f"  --redo {stage}: removed {path}")
            self.records[later] = StageRecord()
        self._write_records()
        self._barrier()

    def _run_stage(self, stage: str, header: str) -> None:
        definition = self.plan.stage(stage)
        record = self.records[stage]
        resuming = record.status in ("running", "failed")
        if self.is_main:
            self._check_outputs_are_ours(stage)
        self.echo(f"{header}: {'resuming' if resuming else 'starting'}")
        record.status, record.options_hash, record.error = "running", self.plan.hashes[stage], None
        record.outputs = sorted(set(record.outputs) | set(self._outputs(stage)))
        record.attempts += 1
        self._write_records()
        try:
            log = self.dir / LOGS_DIR / f"{stage}.log" if self.is_main else None
            with self._timing(record), stage_log(log, self.verbose):
                if definition.every_process or self.is_main:
                    record.summary = definition.run(self) or {}
                self._barrier()
        except BaseException as error:
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
            self._write_records()
            raise
        record.status = "done"
        self._write_records()
        details = ", ".join(f"{k} {v}" for k, v in record.summary.items() if not isinstance(v, dict | list))
        self.echo(f"{header}: done in {duration(record.seconds)}" + (f" ({details})" if details else ""))

    def _check_outputs_are_ours(self, stage: str) -> None:
        recorded = set(self.records[stage].outputs)
        for relative in self._outputs(stage):
            path = self.dir / relative
            if relative not in recorded and (path.exists() or path.is_symlink()):
                raise ForeignFolderError(
                    f"{path} exists but lm2vec's record of {self.dir} does not list it; move it away or "
                    "choose a new --out."
                )

    @contextlib.contextmanager
    def _timing(self, record: StageRecord) -> Iterator[None]:
        """Adds the attempt's wall time to `record.seconds`, written every HEARTBEAT_SECONDS while it runs, so
        the time of an attempt that is killed (not just failed) still counts after a resume."""
        before, started, stop = record.seconds, time.perf_counter(), threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                record.seconds = before + time.perf_counter() - started
                self._write_records()

        heart = threading.Thread(target=beat, name="lm2vec-stage-time", daemon=True)
        heart.start()
        try:
            yield
        finally:
            stop.set()
            heart.join()
            record.seconds = before + time.perf_counter() - started

    def _barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def _distributed_state():
    """accelerate's process state under torchrun/accelerate launch (None in a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_recipe(
    recipe: str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    redo: str | None = None,
    until: str | None = None,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    only: str | None = None,
    with_inputs: bool = False,
    gpu_memory: str | None = None,
) -> Pipeline:
    """Plan and run a recipe; returns the finished pipeline (its `records` hold each stage's outcome). With
    `only`, just that stage runs (`lm2vec run R --only STAGE`), and with `with_inputs` also the stages it reads
    from that are not done yet (`lm2vec train STAGE --recipe R`); a stage that cannot fit in memory is refused
    (`gpu_memory`: each GPU's, default the device's own)."""
    pipeline = Pipeline(plan_run(recipe, overrides, out), echo, verbose)
    if not pipeline.is_main:
        pipeline.echo = lambda message: None
    pipeline.run(redo=redo, until=until, only=only, with_inputs=with_inputs, gpu_memory=gpu_memory)
    return pipeline
