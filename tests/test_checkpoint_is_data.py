"""A checkpoint is data, not instructions (issue 14 item 2): what it carries may choose how to preprocess, never
where to read from the network or write on disk."""

from __future__ import annotations

import http.server
import threading

from lit_imgcls.io import load_checkpoint, save_checkpoint

from conftest import quick_args, run_cli


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Recorder.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_score_does_not_download_where_a_checkpoint_says(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path, num_examples=320), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    state = load_checkpoint(tmp_path / "model/mnist-0001.ckpt")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        evil = tmp_path / "evil"
        evil.mkdir()
        state["lit_imgcls"]["recipe"].update(data_dir=str(evil), data_url=f"http://127.0.0.1:{server.server_port}/",
                                             data_cache=str(tmp_path / "cache"))
        save_checkpoint(state, tmp_path / "crafted.ckpt")
        res = run_cli("score", "--checkpoint", str(tmp_path / "crafted.ckpt"), "--threads", "2", cwd=tmp_path)
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr[-2000:]
    assert _Recorder.seen == [] and list(evil.iterdir()) == [] and not (tmp_path / "cache").exists()
    assert "the checkpoint's data_url" in res.stderr and "give --data-url to use it" in res.stderr
    assert "the checkpoint's data_dir" in res.stderr
