"""Unit tests of app.py on the mock host: `python3 -m unittest test_lms` (after
`componentize-py -d wit -w lms-connector bindings .`)."""

import json
import unittest

from componentize_py_types import Err
from mock_host import MockHost
from wit_world.imports.types import ConnectorError_RateLimited, Employee, EmploymentStatus

import app

BASE = "https://lms.example/scim/v2"
NONE = {"Resources": []}


def employee(employee_id):
    return Employee(employee_id, None, f"{employee_id}@acme.example", "Ann", "Lee",
                    EmploymentStatus.ACTIVE, None, None, None, None, None, None, None, None, [])


class Lms(unittest.TestCase):
    def test_a_new_account_is_looked_up_then_created_with_the_hris_id(self):
        host = (MockHost().config("base_url", BASE)
                .on("GET", BASE + "/Users*", 200, NONE)
                .on("POST", BASE + "/Users", 201, {"id": "u-1", "active": True}))
        with host:
            made = app.UserProvisioning().upsert_user(employee("101"), None, "key-1")
        self.assertEqual(made, "u-1")
        self.assertEqual(host.requests[0].method, "GET", "looked up first")
        created = next(r for r in host.requests if r.method == "POST")
        self.assertIn(("content-type", "application/scim+json"), created.headers)
        self.assertEqual(json.loads(created.body)["externalId"], "101")

    def test_a_course_group_is_made_once_and_a_429_is_rate_limited(self):
        host = (MockHost().config("base_url", BASE)
                .on("GET", BASE + "/Groups*", 200, NONE)
                .on("POST", BASE + "/Groups", 201, {"id": "g-1"})
                .on("PATCH", BASE + "/Groups/g-1", 204)
                .on("PATCH", BASE + "/Groups/g-1", 429, headers=[("Retry-After", "5")]))
        with host:
            app.Enrollment().enroll("u-1", "SAFETY", None, "k1")
            with self.assertRaises(Err) as raised:
                app.Enrollment().enroll("u-2", "SAFETY", None, "k2")
        self.assertEqual(raised.exception.value, ConnectorError_RateLimited(5))
        self.assertEqual(sum(r.method == "POST" for r in host.requests), 1, "the group is remembered")
        self.assertEqual(host.held, [], "the lock is let go")


if __name__ == "__main__":
    unittest.main()
