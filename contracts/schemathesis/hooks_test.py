"""Tests of the custom checks in hooks.py (run by tools/schemathesis.sh before every fuzz run):
python -m unittest discover -s contracts/schemathesis -p 'hooks_test.py'
"""

from __future__ import annotations

import os
import shutil
import tempfile
import types
import unittest
from unittest import mock

os.environ.setdefault("ORCHD_FUZZ_BODY_LIMIT", "1024")

import hooks  # noqa: E402
from schemathesis.openapi.checks import UseAfterFree  # noqa: E402

SESSION = "E3E70682-c209-1cac-a29f-6fbed82c07cd"


def _case(case_id, method, path, params=None, body=None):
    return types.SimpleNamespace(
        id=case_id,
        operation=types.SimpleNamespace(method=method, path=path),
        path_parameters=params,
        body=body,
    )


def _ctx(cases, statuses):
    internals = types.SimpleNamespace(
        find_all_cases=lambda: iter(cases),
        find_response=lambda case_id: types.SimpleNamespace(status_code=statuses[case_id]),
    )
    return types.SimpleNamespace(internals=internals)


def _builtin_fails(free):
    def check(ctx, response, case):
        raise UseAfterFree(operation="op", message="deleted", free=free, usage="GET")

    return check


DELETE = _case("d", "DELETE", "/v1/sessions/{id}", {"id": SESSION})
DELETE_AGAIN = _case("d2", "DELETE", "/v1/sessions/{id}", {"id": SESSION})
CREATE = _case("p", "POST", "/v1/tasks", body={"session_id": SESSION.lower()})
CREATE_OTHER = _case("p2", "POST", "/v1/tasks", body={"session_id": "0a9d7b6e-2f39-4f47-8f0e-8b1c0c0f7c22"})
GET = _case("g", "GET", "/v1/sessions/{id}", {"id": SESSION})
OK = {"d": 204, "d2": 204, "p": 202, "p2": 202, "g": 200}


class UseAfterFreeTasksCreateSessions(unittest.TestCase):
    def run_check(self, sequence, statuses=OK, free="DELETE /v1/sessions/" + SESSION.lower()):
        with mock.patch.object(hooks, "_builtin_use_after_free", _builtin_fails(free)):
            hooks.use_after_free_tasks_create_sessions(_ctx(sequence, statuses), None, sequence[-1])

    def test_a_task_naming_the_deleted_session_creates_it_again(self):
        self.run_check([DELETE, CREATE, GET])

    def test_still_a_failure(self):
        tests = {
            "no task in between": ([DELETE, GET], OK, None),
            "a task of another session": ([DELETE, CREATE_OTHER, GET], OK, None),
            "the task came before the delete": ([CREATE, DELETE, GET], OK, None),
            "deleted again after the task": ([DELETE, CREATE, DELETE_AGAIN, GET], OK, None),
            "the task was refused": ([DELETE, CREATE, GET], {**OK, "p": 429}, None),
            "another resource": ([DELETE, CREATE, GET], OK, "DELETE /v1/artifacts/x"),
        }
        for name, (sequence, statuses, free) in tests.items():
            with self.subTest(name):
                kwargs = {"free": free} if free else {}
                with self.assertRaises(UseAfterFree):
                    self.run_check(sequence, statuses, **kwargs)


class PayloadTooLargeOnlyOverTheLimit(unittest.TestCase):
    def run_check(self, status, size):
        request = types.SimpleNamespace(body=b"x" * size if size else None)
        hooks.payload_too_large_only_over_the_limit(None, types.SimpleNamespace(status_code=status, request=request), None)

    def test_passes(self):
        for status, size in [(413, hooks.BODY_LIMIT + 1), (400, hooks.BODY_LIMIT + 1), (202, hooks.BODY_LIMIT), (200, 0), (401, 10 * hooks.BODY_LIMIT)]:
            with self.subTest(status=status, size=size):
                self.run_check(status, size)

    def test_fails(self):
        for status, size in [(413, hooks.BODY_LIMIT), (413, 0), (202, hooks.BODY_LIMIT + 1), (201, 10 * hooks.BODY_LIMIT)]:
            with self.subTest(status=status, size=size):
                with self.assertRaises(AssertionError):
                    self.run_check(status, size)


class FoldReload(unittest.TestCase):
    """Positive reload references name a file of models_dirs; negative ones are left alone."""

    def setUp(self):
        self.state = tempfile.mkdtemp()
        models = os.path.join(self.state, "models")
        os.mkdir(models)
        for name in ("tiny.gguf", hooks.NOT_A_MODEL):
            with open(os.path.join(models, name), "w") as f:
                f.write("x")
        os.mkdir(os.path.join(models, "dir"))
        os.symlink("/etc/hostname", os.path.join(models, "escape.gguf"))
        self.addCleanup(shutil.rmtree, self.state)
        patcher = mock.patch.object(hooks, "STATE_DIR", self.state)
        patcher.start()
        self.addCleanup(patcher.stop)

    def fold(self, ref, negative=False):
        meta = types.SimpleNamespace(is_negative_at=lambda location: negative)
        case = types.SimpleNamespace(
            operation=types.SimpleNamespace(method="POST", path="/v1/pools/{id}/reload"),
            meta=meta,
            body={"new_model_ref": ref},
        )
        hooks.map_case(None, case)
        return case.body["new_model_ref"]

    def test_kept(self):
        for ref in ["models/tiny.gguf", "file:models/tiny.gguf", os.path.join(self.state, "models", "tiny.gguf"), "models/dir/../tiny.gguf"]:
            with self.subTest(ref):
                self.assertEqual(self.fold(ref), ref)

    def test_folded(self):
        for ref in ["tiny", "/etc/passwd", "models/../models", "models/dir", "models/missing.gguf", "models/escape.gguf", "../models/tiny.gguf", "\ud800", "file:", "a\0b"]:
            with self.subTest(ref):
                got = self.fold(ref)
                self.assertNotEqual(got, ref)
                self.assertTrue(hooks._names_model_file(got), got)
                self.assertTrue(os.path.realpath(os.path.join(self.state, got.removeprefix("file:"))).endswith(hooks.NOT_A_MODEL), got)
                self.assertEqual(self.fold(ref), got, "the same value folds the same way")

    def test_negative_untouched(self):
        self.assertEqual(self.fold("/etc/passwd", negative=True), "/etc/passwd")


class FoldTask(unittest.TestCase):
    def fold(self, body, negative=False):
        meta = types.SimpleNamespace(is_negative_at=lambda location: negative)
        case = types.SimpleNamespace(operation=types.SimpleNamespace(method="POST", path="/v1/tasks"), meta=meta, body=body)
        hooks.map_case(None, case)
        return case.body

    def test_chat_inputs_odd(self):
        tests = [
            ("chat", ["u1", "a1"], ["u1"]),
            ("chat", ["u1", "a1", "u2", "a2"], ["u1", "a1", "u2"]),
            ("chat", ["u1"], ["u1"]),
            ("chat", ["u1", "a1", "u2"], ["u1", "a1", "u2"]),
            ("completion", ["s1", "s2"], ["s1", "s2"]),
        ]
        for workload, inputs, want in tests:
            with self.subTest(workload=workload, inputs=inputs):
                body = self.fold({"workload": workload, "inputs": list(inputs), "ctx": 8, "max_tokens": 4})
                self.assertEqual(body["inputs"], want)

    def test_ctx_and_max_tokens(self):
        body = self.fold({"workload": "completion", "prompt": "p", "ctx": hooks.CTX_MAX + 5, "max_tokens": 30})
        self.assertEqual(body["ctx"], 5)
        self.assertEqual(body["max_tokens"], 5)

    def test_negative_untouched(self):
        body = self.fold({"workload": "chat", "inputs": ["u1", "a1"], "ctx": hooks.CTX_MAX + 5, "max_tokens": 4}, negative=True)
        self.assertEqual(body["inputs"], ["u1", "a1"])
        self.assertEqual(body["ctx"], hooks.CTX_MAX + 5)


if __name__ == "__main__":
    unittest.main()
