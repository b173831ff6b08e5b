"""Unit tests of app.py on the mock host: `python3 -m unittest test_hris` (after
`componentize-py -d wit -w hris-connector bindings .`)."""

import unittest

from componentize_py_types import Err
from mock_host import MockHost
from wit_world.imports.types import ConnectorError_Unauthorized

import app

BASE = "https://hr.example/api"
DATE = [("Date", "Wed, 02 Dec 2026 10:00:00 GMT")]


class Hris(unittest.TestCase):
    def test_a_listing_pages_and_its_changes_cursor_is_when_it_started(self):
        host = (MockHost().config("base_url", BASE)
                .on("GET", BASE + "/employees?page=1", 200,
                    {"employees": [{"id": 7, "status": "active", "first_name": "Ann"}], "next_page": 2}, DATE)
                .on("GET", BASE + "/employees?page=2", 200,
                    {"employees": [{"id": 8, "status": "terminated"}], "next_page": None},
                    [("Date", "Wed, 02 Dec 2026 10:05:00 GMT")]))
        with host:
            first = app.EmployeeSource().fetch_employees(None)
            last = app.EmployeeSource().fetch_employees(first.next_cursor)
        self.assertEqual([e.id for e in first.employees + last.employees], ["7", "8"])
        self.assertIsNone(first.changes_cursor)
        # The moment the listing started, not when it ended.
        self.assertEqual(last.changes_cursor, "since|2026-12-02T10:00:00Z")

    def test_a_401_is_unauthorized(self):
        host = MockHost().config("base_url", BASE).on("GET", BASE + "/employees?page=1", 401)
        with host, self.assertRaises(Err) as raised:
            app.EmployeeSource().fetch_employees(None)
        self.assertIsInstance(raised.exception.value, ConnectorError_Unauthorized)


if __name__ == "__main__":
    unittest.main()
