"""The node's inference thread (no rclpy): one job at a time, finish after every job, and
the opt-in profile that survives however the node is stopped."""
import time

from flash_rt_ros.worker import PROFILE_ENV, PROFILE_EVERY, InferenceWorker


def run_jobs(worker: InferenceWorker, n: int) -> None:
    for i in range(n):
        assert not worker.busy
        worker.submit(i)
        end = time.monotonic() + 5.0
        while worker.busy:
            assert time.monotonic() < end, f"job {i} never finished"
            time.sleep(0.001)


def test_every_job_runs_once_and_is_finished_even_when_it_raises(capsys):
    ran, finished = [], []

    def run(job):
        ran.append(job)
        if job == 1:
            raise RuntimeError("predict failed")

    w = InferenceWorker(run, finished.append)
    try:
        run_jobs(w, 3)
    finally:
        assert w.stop(1.0)
    assert ran == [0, 1, 2] and finished == [0, 1, 2]  # the thread outlived the failure
    assert "predict failed" in capsys.readouterr().err


def test_profile_file_is_rewritten_every_few_jobs(tmp_path, monkeypatch):
    path = tmp_path / "profile.txt"
    monkeypatch.setenv(PROFILE_ENV, str(path))

    def predict_like(job):
        sum(range(2000))

    w = InferenceWorker(predict_like, lambda job: None)
    try:
        run_jobs(w, PROFILE_EVERY - 1)
        assert not path.exists()
        run_jobs(w, 1)
    finally:
        assert w.stop(1.0)
    text = path.read_text()
    assert text.startswith(f"{PROFILE_EVERY} jobs") and "predict_like" in text
