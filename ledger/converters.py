"""A path converter for numbers that fit the database's bigint: `<id:name>`.

Django's `<int:...>` takes any number of digits, and a 30-digit index or id reached
PostgreSQL as out of range (a 500). Eighteen digits are below 2**63; a longer number
matches no route, so it is a 404 naming the path. Registered once, on import.
"""

from django.urls import register_converter


class BoundedIntConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(BoundedIntConverter, "id")
