"""One reader of a job's log for every follower (`jobs stream`, the studio's log stream): whole lines from a byte
position on, a line still being written left for the next read, and read at the end once the job has ended."""

from __future__ import annotations

from pathlib import Path

from chattune.pipeline.joblog import JOB_LOG
from chattune.workspace import Workspace


def test_whole_lines_from_a_position_and_the_unterminated_tail_only_at_the_end(home: Path) -> None:
    jobs = Workspace.from_env().jobs
    assert jobs.read_log("ftjob-none") == ((), 0)  # no log yet
    log = jobs.job_dir("ftjob-x") / JOB_LOG
    log.parent.mkdir(parents=True)
    log.write_bytes("step one\nstep twö\nhalf a li".encode())
    lines, position = jobs.read_log("ftjob-x")
    assert lines == ("step one", "step twö") and position == len("step one\nstep twö\n".encode())
    with log.open("ab") as fh:
        fh.write(b"ne\nand the last")
    assert jobs.read_log("ftjob-x", position) == (("half a line",), position + len(b"half a line\n"))
    _, position = jobs.read_log("ftjob-x", position)
    assert jobs.read_log("ftjob-x", position) == ((), position)
    assert jobs.read_log("ftjob-x", position, final=True) == (("and the last",), log.stat().st_size)
