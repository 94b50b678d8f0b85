"""Warm script containers with a real podman: reuse, isolation between invocations, clean-up.

The executor is driven directly (no server), with the busybox test image of `tests/podman.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.executors.base import Completed, Invocation
from sluice.executors.container import OWNER_LABEL, SERVICE_LABEL, ContainerExecutor
from tests.podman import ENGINE_ARGS, IMAGE, Podman


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    return Podman.for_tests(tmp_path_factory.mktemp("podman"))


@pytest.fixture
def engine_env(podman: Podman, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERS_CONF", str(podman.conf))


Runner = Callable[..., Any]  # run_with(scenario, **executor options) -> what the scenario returned


def executor(tmp_path: Path, **options: object) -> ContainerExecutor:
    return ContainerExecutor(
        "podman",
        engine_args=ENGINE_ARGS,
        owner=f"test-{uuid.uuid4().hex[:12]}",
        state_dir=tmp_path / "state",
        **options,
    )


def workspace(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    (folder / "output").mkdir(parents=True, exist_ok=True)
    return folder


def invocation(
    folder: Path, script: str, *, service: str = "svc", timeout: float = 60, **env: str
) -> Invocation:
    script_path = folder.parent / f"{uuid.uuid5(uuid.NAMESPACE_OID, script).hex}.sh"
    script_path.write_text(script)
    return Invocation(
        argv=["/bin/sh", str(script_path)],
        env={"OSCAR_SERVICE_NAME": service, "TMP_OUTPUT_DIR": str(folder / "output"), **env},
        workdir=folder,
        timeout=timeout,
        memory_bytes=64 * 1024**2,
        cpus=1.0,
        image=IMAGE,
        read_only_paths=(script_path,),
        network=False,
    )


@pytest.fixture
def run_with(tmp_path: Path, podman: Podman, engine_env: None) -> Iterator[Runner]:
    """Run `scenario(executor)` in an event loop; afterwards no container of that executor remains."""
    owners: list[str] = []

    def run(scenario: Callable[[ContainerExecutor], Awaitable[object]], **options: object) -> object:
        ex = executor(tmp_path, warm_limit=options.pop("warm_limit", 4), **options)
        owners.append(ex.owner)

        async def main() -> object:
            try:
                return await scenario(ex)
            finally:
                await ex.stop()

        return asyncio.run(main())

    yield run
    for owner in owners:
        assert podman.containers(f"{OWNER_LABEL}={owner}") == []


def steps(*bodies: str) -> str:
    """One script running body N when $STEP is N: calls of one script can share a container
    (another script is another mount, so another container)."""
    cases = "".join(f"  {n}) {body} ;;\n" for n, body in enumerate(bodies))
    return f'case "$STEP" in\n{cases}esac\n'


def output(folder: Path, name: str) -> str:
    return (folder / "output" / name).read_text()


def test_invocations_in_one_workspace_share_one_container(tmp_path: Path, run_with: Runner) -> None:
    folder = workspace(tmp_path, "ws")
    script = 'hostname > "$TMP_OUTPUT_DIR/host-$JOB_UUID"\necho "job $JOB_UUID"\n'

    async def scenario(ex: ContainerExecutor) -> tuple[list[Completed], int]:
        done = [await ex.run(invocation(folder, script, JOB_UUID=str(n))) for n in range(3)]
        assert ex.warm is not None
        return done, ex.warm.started

    done, started = run_with(scenario)
    assert [d.exit_code for d in done] == [0, 0, 0]
    assert [d.output.strip() for d in done] == ["job 0", "job 1", "job 2"]  # each its own log and env
    hosts = {output(folder, f"host-{n}") for n in range(3)}
    assert len(hosts) == 1 and started == 1


def test_each_workspace_and_each_service_gets_its_own_container(
    tmp_path: Path, run_with: Runner, podman: Podman
) -> None:
    one, two = workspace(tmp_path, "one"), workspace(tmp_path, "two")
    script = 'hostname > "$TMP_OUTPUT_DIR/host"\n'

    async def scenario(ex: ContainerExecutor) -> tuple[int, list[str]]:
        for folder, service in ((one, "a"), (two, "a"), (one, "b")):
            assert (await ex.run(invocation(folder, script, service=service))).exit_code == 0
        assert ex.warm is not None
        return ex.warm.started, podman.containers(f"{SERVICE_LABEL}=b")

    started, service_b = run_with(scenario)
    assert started == 3
    assert len(service_b) == 1  # labelled with its service, so an admin can find it


def test_nothing_an_invocation_started_outlives_it(tmp_path: Path, run_with: Runner) -> None:
    folder = workspace(tmp_path, "ws")

    script = steps("sleep 300 & (sleep 301 &); echo left", 'ps > "$TMP_OUTPUT_DIR/ps"')

    async def scenario(ex: ContainerExecutor) -> tuple[Completed, Completed, int]:
        first = await ex.run(invocation(folder, script, STEP="0"))
        second = await ex.run(invocation(folder, script, STEP="1"))
        assert ex.warm is not None
        return first, second, ex.warm.started

    first, second, started = run_with(scenario)
    assert started == 1
    assert first.exit_code == 0 and first.output.strip() == "left"
    assert second.exit_code == 0
    processes = output(folder, "ps")
    assert "sleep" not in processes, processes


def test_the_control_pipe_is_out_of_the_scripts_reach(tmp_path: Path, run_with: Runner) -> None:
    """A script that reads stdin gets nothing, one that prints numbers does not forge its exit code."""
    folder = workspace(tmp_path, "ws")

    script = steps('cat > "$TMP_OUTPUT_DIR/stdin"; echo 0; exit 3', "echo done")

    async def scenario(ex: ContainerExecutor) -> tuple[Completed, Completed, int]:
        reader = await ex.run(invocation(folder, script, STEP="0"))
        after = await ex.run(invocation(folder, script, STEP="1"))
        assert ex.warm is not None
        return reader, after, ex.warm.started

    reader, after, started = run_with(scenario)
    assert started == 1
    assert reader.exit_code == 3 and reader.output.strip() == "0"
    assert output(folder, "stdin") == ""
    assert after.exit_code == 0 and after.output.strip() == "done"


def test_values_with_quotes_and_line_breaks_reach_the_script_intact(tmp_path: Path, run_with: Runner) -> None:
    folder = workspace(tmp_path, "ws")
    value = 'line one\nit\'s "quoted" $HOME `date` \\ end'

    async def scenario(ex: ContainerExecutor) -> Completed:
        return await ex.run(invocation(folder, 'printf %s "$PEM" > "$TMP_OUTPUT_DIR/pem"\n', PEM=value))

    assert run_with(scenario).exit_code == 0
    assert output(folder, "pem") == value


def test_without_warm_containers_a_multiline_value_is_refused_by_name(
    tmp_path: Path, run_with: Runner
) -> None:
    folder = workspace(tmp_path, "ws")

    async def scenario(ex: ContainerExecutor) -> Completed:
        assert ex.warm is None
        return await ex.run(invocation(folder, "true\n", PEM="a\nb"))

    done = run_with(scenario, warm_limit=0)
    assert done.exit_code is None
    assert "line breaks" in done.error and "PEM" in done.error


def test_a_timeout_removes_the_container_and_the_next_call_gets_a_fresh_one(
    tmp_path: Path, run_with: Runner
) -> None:
    folder = workspace(tmp_path, "ws")

    script = steps("echo started; sleep 60", "echo again")

    async def scenario(ex: ContainerExecutor) -> tuple[Completed, Completed, int]:
        slow = await ex.run(invocation(folder, script, timeout=2, STEP="0"))
        again = await ex.run(invocation(folder, script, STEP="1"))
        assert ex.warm is not None
        return slow, again, ex.warm.started

    slow, again, started = run_with(scenario)
    assert slow.timed_out and slow.exit_code is None
    assert "started" in slow.output and "removed after the 2 s timeout" in slow.output
    assert again.exit_code == 0 and again.output.strip() == "again"
    assert started == 2


def test_a_cancelled_invocation_removes_its_container(
    tmp_path: Path, run_with: Runner, podman: Podman
) -> None:
    folder = workspace(tmp_path, "ws")

    async def scenario(ex: ContainerExecutor) -> list[str]:
        task = asyncio.create_task(ex.run(invocation(folder, "sleep 60\n", service="cancelled")))
        for _ in range(300):  # up to 30 s for the container to start
            if podman.containers(f"{SERVICE_LABEL}=cancelled"):
                break
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return podman.containers(f"{SERVICE_LABEL}=cancelled")

    assert run_with(scenario) == []


def test_the_memory_limit_applies_and_the_container_survives_an_oom_kill(
    tmp_path: Path, run_with: Runner
) -> None:
    folder = workspace(tmp_path, "ws")
    script = steps('x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo "held ${#x}"', "echo fine")

    async def scenario(ex: ContainerExecutor) -> tuple[Completed, Completed, int]:
        killed = await ex.run(invocation(folder, script, STEP="0"))
        after = await ex.run(invocation(folder, script, STEP="1"))
        assert ex.warm is not None
        return killed, after, ex.warm.started

    killed, after, started = run_with(scenario)
    assert started == 1
    assert killed.exit_code == 137
    assert after.exit_code == 0 and after.output.strip() == "fine"


def test_a_job_not_its_container_loop_is_what_an_oom_kill_takes(tmp_path: Path, run_with: Runner) -> None:
    """The job's processes are the OOM killer's first choice; the loop (PID 1) keeps what the
    engine gave it (0 unless the engine was told otherwise)."""
    folder = workspace(tmp_path, "ws")
    script = 'echo "$(cat /proc/self/oom_score_adj) $(cat /proc/1/oom_score_adj)"\n'

    async def scenario(ex: ContainerExecutor) -> Completed:
        return await ex.run(invocation(folder, script))

    done = run_with(scenario)
    assert done.exit_code == 0
    job, loop = (int(value) for value in done.output.split())  # nothing else in the log
    assert job == 1000 and loop < 1000


def test_at_most_limit_idle_containers_are_kept(tmp_path: Path, run_with: Runner, podman: Podman) -> None:
    folders = [workspace(tmp_path, f"ws{n}") for n in range(3)]

    async def scenario(ex: ContainerExecutor) -> list[str]:
        for folder in folders:
            assert (await ex.run(invocation(folder, "true\n", service="limited"))).exit_code == 0
        for _ in range(300):  # the extra ones are removed in the background: up to 30 s
            kept = podman.containers(f"{SERVICE_LABEL}=limited")
            if len(kept) <= 1:
                break
            await asyncio.sleep(0.1)
        return kept

    assert len(run_with(scenario, warm_limit=1)) == 1


def test_a_missing_image_fails_with_the_engines_message(tmp_path: Path, run_with: Runner) -> None:
    folder = workspace(tmp_path, "ws")

    async def scenario(ex: ContainerExecutor) -> Completed:
        call = invocation(folder, "true\n")
        missing = dataclasses.replace(call, image="localhost/no-such-image:1", pull_policy="never")
        return await ex.run(missing)

    done = run_with(scenario)
    assert done.exit_code is None
    assert done.error.startswith("podman could not run the container:"), done.error
    assert "no-such-image" in done.error


def test_a_job_cannot_smuggle_commands_or_answers_to_the_loop(tmp_path: Path, run_with: Runner) -> None:
    """A job runs as the loop's user and can open its pipes through /proc/1/fd: lines without the
    container's secret are refused, so nothing it writes there runs after it or passes as an answer."""
    folder = workspace(tmp_path, "ws")
    smuggle = (
        'printf "touch %s/pwned\\n" "$TMP_OUTPUT_DIR" > /tmp/evil.sh; '
        'for fd in /proc/1/fd/*; do printf "0 /tmp/evil.sh\\n" > "$fd"; done 2>/dev/null; exit 0'
    )
    script = steps(smuggle, "echo clean")

    async def scenario(ex: ContainerExecutor) -> tuple[Completed, Completed, int]:
        attack = await ex.run(invocation(folder, script, STEP="0"))
        after = await ex.run(invocation(folder, script, STEP="1"))
        assert ex.warm is not None
        return attack, after, ex.warm.started

    attack, after, started = run_with(scenario)
    assert attack.exit_code is None and attack.error  # its forged answer was caught
    assert after.exit_code == 0 and after.output.strip() == "clean"
    assert started == 2  # the tampered container was dropped, a fresh one served the next job
    assert not (folder / "output" / "pwned").exists()


@pytest.mark.parametrize("warm_limit", [4, 0])
def test_the_script_replaces_the_images_entrypoint(
    tmp_path: Path, run_with: Runner, podman: Podman, warm_limit: int
) -> None:
    image = podman.ensure_entrypoint_image()
    folder = workspace(tmp_path, "ws")

    async def scenario(ex: ContainerExecutor) -> Completed:
        call = invocation(folder, 'echo "the script ran" > "$TMP_OUTPUT_DIR/ran"\n')
        return await ex.run(dataclasses.replace(call, image=image))

    done = run_with(scenario, warm_limit=warm_limit)
    assert done.exit_code == 0, done.output
    assert output(folder, "ran") == "the script ran\n"
    assert "the entrypoint ran" not in done.output
