"""Many rows in one statement, for the hot paths that read and write a batch of conversations.

`bulk_update` builds a CASE expression per field per row and resolves each one through the
ORM (~3 ms a row, measured); `bulk_create` prepares every value through the SQL compiler, and a
`pk__in` filter resolves every value of its list through lookups (~12 % of a worker's CPU with
batches of hundreds). These helpers keep the ORM's per-field conversions (`get_db_prep_save`
going in, the backend's and the field's converters coming out, so the same code runs on SQLite
and PostgreSQL) and hand the rows to the driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper


def _quote(connection: BaseDatabaseWrapper, name: str) -> str:
    return str(connection.ops.quote_name(name))


def _fields(model: type[models.Model], names: Sequence[str]) -> list[models.Field]:
    return [model._meta.get_field(name) for name in names]  # type: ignore[misc]


# Fields whose database value is the Python value itself on every backend Django ships, when
# that value is already of the field's type (CharField.get_prep_value is str(), and so on).
_PLAIN_FIELDS = {
    "CharField": str,
    "TextField": str,
    "IntegerField": int,
    "PositiveIntegerField": int,
    "BigIntegerField": int,
    "SmallIntegerField": int,
    "BooleanField": bool,
    "AutoField": int,
    "BigAutoField": int,
}


def _plain_type(field: models.Field) -> type | None:
    return _PLAIN_FIELDS.get(field.get_internal_type()) if not field.is_relation else None


def _converter(connection: BaseDatabaseWrapper, field: models.Field) -> Callable[[Any], Any]:
    """`field.get_db_prep_save(value, connection)`, taking a shorter way to the same result for the
    values the hot paths store most: a UUID (a conversation's id, also as a foreign key) and a
    dict or list for a JSON field (payloads, positions) skip Django's checks for expressions,
    lazy strings and other types (measured alone: 3.9 -> 0.3 us and 8.0 -> 3.9 us a value)."""
    target = field.target_field if field.is_relation else field  # type: ignore[attr-defined]
    if type(target) is models.UUIDField:
        native = connection.features.has_native_uuid_field

        def uuid_value(value: Any) -> Any:
            if type(value) is uuid.UUID:
                return value if native else value.hex
            return field.get_db_prep_save(value, connection)

        return uuid_value
    if type(field) is models.JSONField:
        adapt, encoder = connection.ops.adapt_json_value, field.encoder

        def json_value(value: Any) -> Any:
            if type(value) is dict or type(value) is list:
                return adapt(value, encoder)
            return field.get_db_prep_save(value, connection)

        return json_value
    return lambda value: field.get_db_prep_save(value, connection)


def _prepare(
    connection: BaseDatabaseWrapper, fields: list[models.Field], rows: Sequence[Sequence[Any]]
) -> list[list[Any]]:
    """Database values for `rows`. A batch repeats values (its timestamp, constants), so a value
    that is the very object of the row above reuses that row's conversion; a string, number or
    flag for a plain field needs none."""
    plain = [_plain_type(field) for field in fields]
    convert = [_converter(connection, field) for field in fields]
    prepared: list[list[Any]] = []
    previous: Sequence[Any] = ()
    previous_prepared: list[Any] = []
    for row in rows:
        if len(row) != len(fields):
            raise ValueError(f"a row of {len(row)} values for {len(fields)} fields")
        values = [
            value if plain[index] is not None and (value is None or type(value) is plain[index])
            else previous_prepared[index] if previous and previous[index] is value
            else convert[index](value)
            for index, value in enumerate(row)
        ]  # fmt: skip
        prepared.append(values)
        previous, previous_prepared = row, values
    return prepared


ModelT = TypeVar("ModelT", bound=models.Model)
Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]
ColumnConverters = list[list[tuple[Converter, Any]]]  # per column, with the expression each takes


def select(
    model: type[models.Model],
    names: Sequence[str],
    *,
    where_in: Mapping[str, Collection[Any]],
    null: Sequence[str] = (),
    not_null: Sequence[str] = (),
    order_by: str | None = None,
    limit: int | None = None,
    lock: bool = False,
    skip_locked: bool = False,
) -> list[tuple[Any, ...]]:
    """Rows of the fields `names` (foreign keys as ids) whose fields `where_in` have one of the
    given values, whose fields `null` are NULL and `not_null` are not, as Python values, in the
    order of `order_by` ("-name": descending), at most `limit`. `lock`: FOR UPDATE where the
    database has it (SQLite locks the whole database instead), `skip_locked` leaving out rows
    another transaction holds."""
    if any(not values for values in where_in.values()):
        return []
    connection = connections[DEFAULT_DB_ALIAS]
    table = _quote(connection, model._meta.db_table)
    fields = _fields(model, names)
    conditions: list[str] = []
    params: list[Any] = []
    for name, values in where_in.items():
        field = _fields(model, [name])[0]
        target = field.target_field if field.is_relation else field  # type: ignore[attr-defined]
        conditions.append(f"{_quote(connection, field.column)} IN ({', '.join(['%s'] * len(values))})")
        params += [target.get_db_prep_value(value, connection, prepared=False) for value in values]
    conditions += [f"{_quote(connection, field.column)} IS NULL" for field in _fields(model, null)]
    conditions += [f"{_quote(connection, field.column)} IS NOT NULL" for field in _fields(model, not_null)]
    columns = ", ".join(_quote(connection, field.column) for field in fields)
    sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)}"  # noqa: S608 (names from model metadata)
    if order_by:
        descending = order_by.startswith("-")
        sql += f" ORDER BY {_quote(connection, _fields(model, [order_by.lstrip('-')])[0].column)}"
        sql += " DESC" if descending else ""
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    if lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
        if skip_locked and connection.features.has_select_for_update_skip_locked:
            sql += " SKIP LOCKED"
    columns_converters = [_converters(connection, model, field) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _convert(connection, rows, columns_converters)


def instances(
    model: type[ModelT],
    fields: Sequence[models.Field],
    *,
    where_in: Mapping[str, Collection[Any]],
    not_null: Sequence[str] = (),
    order_by: str | None = None,
    limit: int | None = None,
    lock: bool = False,
    skip_locked: bool = False,
) -> list[ModelT]:
    """`select` of `fields` (in the model's field order, as `from_db` takes them), as model
    instances; the fields not read are deferred."""
    names, attnames = [field.name for field in fields], [field.attname for field in fields]
    rows = select(
        model, names, where_in=where_in, not_null=not_null, order_by=order_by, limit=limit, lock=lock,
        skip_locked=skip_locked,
    )  # fmt: skip
    return [model.from_db(DEFAULT_DB_ALIAS, attnames, row) for row in rows]


def _converters(
    connection: BaseDatabaseWrapper, model: type[models.Model], field: models.Field
) -> list[tuple[Converter, Any]]:
    """What the SQL compiler applies to a column's values: the backend's converters, then the
    field's `from_db_value` (JSON, for one)."""
    column = field.get_col(model._meta.db_table)
    found = [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]
    return [(converter, column) for converter in found]


class CompiledQuery:
    """An ORM query that a hot path runs again and again with the same parameters, built and
    compiled to SQL once per process (for the default database) instead of on every run (for
    the inbox's "who else waits" query that was a third of a one-conversation batch's CPU).
    `rows()` returns what `values_list` would, converted the same way."""

    def __init__(self, build: Callable[[], models.QuerySet[Any]]) -> None:
        self.build = build
        self._compiled: tuple[str, tuple[Any, ...], ColumnConverters] | None = None

    def rows(self) -> list[tuple[Any, ...]]:
        connection = connections[DEFAULT_DB_ALIAS]
        compiled = self._compiled
        if compiled is None:
            compiler = self.build().query.get_compiler(connection=connection)
            sql, params = compiler.as_sql()
            found = compiler.get_converters([column for column, _, _ in compiler.select])
            columns_converters = [
                [(converter, found[index][1]) for converter in found[index][0]] if index in found else []
                for index in range(len(compiler.select))
            ]
            compiled = self._compiled = (sql, tuple(params), columns_converters)
        sql, params, columns_converters = compiled
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return _convert(connection, rows, columns_converters)


def _convert(
    connection: BaseDatabaseWrapper, rows: Sequence[Sequence[Any]], columns_converters: ColumnConverters
) -> list[tuple[Any, ...]]:
    if not any(columns_converters):
        return [tuple(row) for row in rows]
    converted = []
    for row in rows:
        values = list(row)
        for index, column_converters in enumerate(columns_converters):
            for converter, expression in column_converters:
                values[index] = converter(values[index], expression, connection)
        converted.append(tuple(values))
    return converted


def insert_rows(model: type[models.Model], names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """INSERT `rows` of Python values, one per field of `names` (foreign keys as ids), with
    primary keys left to the database; the other fields take their database defaults, so name
    every required field."""
    if not rows:
        return
    connection = connections[DEFAULT_DB_ALIAS]  # not the proxy: it is read for every value
    fields = _fields(model, names)
    columns = ", ".join(_quote(connection, field.column) for field in fields)
    row_placeholders = f"({', '.join(['%s'] * len(fields))})"
    table = _quote(connection, model._meta.db_table)
    prepared = _prepare(connection, fields, rows)
    # Many rows per statement, not `executemany`: the driver releases the GIL around every
    # statement it steps, and in a web process each release waits its turn behind the event
    # loop to get it back (an INSERT of 50 inputs took 28 ms at p90 that way, 3 ms alone).
    with connection.cursor() as cursor:
        for chunk in _chunks(prepared, _rows_per_statement(connection, fields, prepared)):
            values = ", ".join([row_placeholders] * len(chunk))
            sql = f"INSERT INTO {table} ({columns}) VALUES {values}"  # noqa: S608 (names from model metadata)
            cursor.execute(sql, [value for row in chunk for value in row])


# PostgreSQL's protocol takes at most 65,535 parameters a statement; Django's backend sets no limit.
MAX_PARAMETERS = 30_000


def _rows_per_statement(connection: BaseDatabaseWrapper, fields: list[models.Field], rows: Sequence[Any]) -> int:
    return max(1, min(connection.ops.bulk_batch_size(fields, rows), MAX_PARAMETERS // len(fields)))


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def update(objects: Sequence[models.Model], names: Sequence[str]) -> None:
    """UPDATE the fields `names` of each of `objects` (one model) from the instances' values."""
    if not objects:
        return
    connection = connections[DEFAULT_DB_ALIAS]
    model = type(objects[0])
    pk = model._meta.pk
    assert pk is not None
    fields = [*_fields(model, names), pk]
    assignments = ", ".join(f"{_quote(connection, field.column)} = %s" for field in fields[:-1])
    table, key = _quote(connection, model._meta.db_table), _quote(connection, pk.column)
    sql = f"UPDATE {table} SET {assignments} WHERE {key} = %s"  # noqa: S608 (names from model metadata)
    rows = [[getattr(obj, field.attname) for field in fields] for obj in objects]
    with connection.cursor() as cursor:
        cursor.executemany(sql, _prepare(connection, fields, rows))


def update_where(obj: models.Model, names: Sequence[str], **expected: Any) -> int:
    """UPDATE the fields `names` of one instance's row from its values, only if the row's fields
    still hold the `expected` values; the number of rows changed (0: another writer moved first)."""
    connection = connections[DEFAULT_DB_ALIAS]
    model = type(obj)
    pk = model._meta.pk
    assert pk is not None
    fields = _fields(model, names)
    conditions = [pk, *_fields(model, list(expected))]
    assignments = ", ".join(f"{_quote(connection, field.column)} = %s" for field in fields)
    where = " AND ".join(f"{_quote(connection, field.column)} = %s" for field in conditions)
    sql = f"UPDATE {_quote(connection, model._meta.db_table)} SET {assignments} WHERE {where}"  # noqa: S608
    row = [getattr(obj, field.attname) for field in fields] + [obj.pk, *expected.values()]
    (params,) = _prepare(connection, [*fields, *conditions], [row])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def delete(model: type[models.Model], primary_keys: Sequence[object]) -> None:
    """DELETE rows by primary key: no cascade, no signals (for models nothing points at)."""
    if not primary_keys:
        return
    connection = connections[DEFAULT_DB_ALIAS]
    pk = model._meta.pk
    assert pk is not None
    table, key = _quote(connection, model._meta.db_table), _quote(connection, pk.column)
    prepared = [value for (value,) in _prepare(connection, [pk], [[key] for key in primary_keys])]
    with connection.cursor() as cursor:
        for chunk in _chunks(prepared, _rows_per_statement(connection, [pk], prepared)):
            sql = f"DELETE FROM {table} WHERE {key} IN ({', '.join(['%s'] * len(chunk))})"  # noqa: S608
            cursor.execute(sql, list(chunk))
