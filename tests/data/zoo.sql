-- Every class of object a logical backup carries, for fidelity round trips and their
-- negative controls (tests/integration/test_postgres_fidelity.py). Runs on PostgreSQL 15
-- and later, as a superuser, in a fresh database.

CREATE ROLE zoo_reader NOLOGIN;
CREATE ROLE zoo_writer LOGIN PASSWORD 'zoo-writer-password';
GRANT zoo_reader TO zoo_writer;
ALTER ROLE zoo_writer SET work_mem = '8MB';
COMMENT ON ROLE zoo_reader IS 'reads the shop';
-- A membership granted by a role other than the superuser (GRANTED BY, compared on 16+).
CREATE ROLE zoo_admin NOLOGIN;
GRANT zoo_reader TO zoo_admin WITH ADMIN OPTION;
CREATE ROLE zoo_auditor NOLOGIN;
GRANT zoo_reader TO zoo_auditor GRANTED BY zoo_admin;

CREATE SCHEMA shop;
CREATE SCHEMA empty_schema;
COMMENT ON SCHEMA shop IS 'the shop';
GRANT USAGE ON SCHEMA shop TO zoo_reader;

CREATE COLLATION shop.c_copy FROM "C";
CREATE COLLATION shop.c_spare FROM "C";
CREATE TYPE shop.status AS ENUM ('new', 'paid', 'shipped', 'never_used');
CREATE DOMAIN shop.positive AS numeric CONSTRAINT positive_check CHECK (VALUE > 0);
CREATE TYPE shop.money_range AS RANGE (subtype = numeric);
CREATE TYPE shop.address AS (street text, city text);
CREATE SEQUENCE shop.invoice_no INCREMENT BY 7 START 1000;

CREATE TABLE shop.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status shop.status NOT NULL DEFAULT 'new',
    amount shop.positive,
    total numeric GENERATED ALWAYS AS (amount * 2) STORED,
    note text COLLATE shop.c_copy,
    tenant text NOT NULL DEFAULT 'zoo_writer',
    placed_on date NOT NULL DEFAULT '2026-01-01',
    ship_to shop.address,
    price_band shop.money_range
);
COMMENT ON TABLE shop.orders IS 'orders';
COMMENT ON COLUMN shop.orders.note IS 'free text';
ALTER TABLE shop.orders ALTER COLUMN note SET STORAGE EXTERNAL;
ALTER TABLE shop.orders ALTER COLUMN note SET COMPRESSION pglz;
ALTER TABLE shop.orders ALTER COLUMN status SET STATISTICS 500;
ALTER TABLE shop.orders ALTER COLUMN tenant SET (n_distinct = 12);
CREATE INDEX orders_status_idx ON shop.orders (status);
CREATE STATISTICS shop.orders_stats ON status, amount FROM shop.orders;
ALTER TABLE shop.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_only ON shop.orders USING (tenant = current_user);
GRANT SELECT ON shop.orders TO zoo_reader;
GRANT UPDATE (note) ON shop.orders TO zoo_writer;

CREATE TABLE shop.events (id int NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE shop.events_2026 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE shop.events_2027 PARTITION OF shop.events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');

CREATE UNLOGGED TABLE shop.scratch (k int);
CREATE TABLE shop.log (msg text);
ALTER TABLE shop.log OWNER TO zoo_writer;
CREATE RULE log_delete AS ON DELETE TO shop.log DO INSTEAD NOTHING;

CREATE FUNCTION shop.due(p int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT p * 2 $$;
CREATE FUNCTION shop.audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = shop AS $$
BEGIN
    NEW.note := coalesce(NEW.note, '') || '.';
    RETURN NEW;
END
$$;
CREATE PROCEDURE shop.cleanup() LANGUAGE sql AS $$ DELETE FROM shop.scratch $$;
CREATE AGGREGATE shop.total_len(text) (sfunc = textcat, stype = text, initcond = '');
COMMENT ON FUNCTION shop.due(int) IS 'twice';
CREATE TRIGGER orders_audit BEFORE INSERT ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.audit();

CREATE FUNCTION shop.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER zoo_ddl ON ddl_command_end EXECUTE FUNCTION shop.on_ddl();

-- Operators, operator classes, casts, an access method, text search: pg_dump carries them all.
COMMENT ON RULE log_delete ON shop.log IS 'keeps the log';
ALTER STATISTICS shop.orders_stats SET STATISTICS 300;
CREATE FUNCTION shop.int_close(a int, b int) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT abs(a - b) < 3 $$;
CREATE OPERATOR shop.=~= (LEFTARG = int, RIGHTARG = int, FUNCTION = shop.int_close, COMMUTATOR = OPERATOR(shop.=~=));
COMMENT ON OPERATOR shop.=~= (int, int) IS 'close enough';
CREATE OPERATOR CLASS shop.int4_alt_ops FOR TYPE int4 USING hash AS OPERATOR 1 =(int4, int4), FUNCTION 1 hashint4(int4);
CREATE CAST (shop.address AS text) WITH INOUT AS ASSIGNMENT;
CREATE ACCESS METHOD zoo_heap TYPE TABLE HANDLER heap_tableam_handler;
CREATE TEXT SEARCH DICTIONARY shop.plain_dict (TEMPLATE = simple, ACCEPT = true);
CREATE TEXT SEARCH CONFIGURATION shop.plain (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION shop.plain ALTER MAPPING FOR word WITH shop.plain_dict;

-- Scheme postgres/6: partitions' indexes attached to their partitioned index, an inheritance
-- child's own copy of an inherited column and CHECK constraint, a conversion, a language, text
-- search code, a transform. The language's handler is a function of the database's own: with
-- pg_catalog's, pg_dump writes CREATE LANGUAGE without it, which no server restores.
CREATE INDEX events_id_idx ON shop.events (id);
CREATE TABLE shop.archive (msg text, CONSTRAINT short_msg CHECK (length(msg) < 100));
CREATE TABLE shop.archive_2026 (msg text, CONSTRAINT short_msg CHECK (length(msg) < 100), kept date) INHERITS (shop.archive);
CREATE TABLE shop.archive_2027 (kept date) INHERITS (shop.archive);
CREATE CONVERSION shop.latin1_utf8 FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;
COMMENT ON CONVERSION shop.latin1_utf8 IS 'ours';
CREATE FUNCTION shop.zoo_pl_handler() RETURNS language_handler LANGUAGE c AS '$libdir/plpgsql', 'plpgsql_call_handler';
CREATE LANGUAGE zoo_pl HANDLER shop.zoo_pl_handler;
CREATE FUNCTION shop.int_from_sql(internal) RETURNS internal LANGUAGE internal IMMUTABLE STRICT AS 'int4recv';
CREATE FUNCTION shop.int_to_sql(internal) RETURNS int LANGUAGE internal IMMUTABLE STRICT AS 'int4recv';
CREATE TRANSFORM FOR int LANGUAGE zoo_pl (FROM SQL WITH FUNCTION shop.int_from_sql(internal), TO SQL WITH FUNCTION shop.int_to_sql(internal));
CREATE TYPE shop.small_id;
CREATE FUNCTION shop.small_id_in(cstring) RETURNS shop.small_id LANGUAGE internal IMMUTABLE STRICT AS 'int4in';
CREATE FUNCTION shop.small_id_out(shop.small_id) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'int4out';
CREATE FUNCTION shop.small_id_recv(internal) RETURNS shop.small_id LANGUAGE internal IMMUTABLE STRICT AS 'int4recv';
CREATE TYPE shop.small_id (INPUT = shop.small_id_in, OUTPUT = shop.small_id_out, RECEIVE = shop.small_id_recv,
                           INTERNALLENGTH = 4, PASSEDBYVALUE, ALIGNMENT = int4, DEFAULT = '0');
CREATE TEXT SEARCH TEMPLATE shop.plain_template (LEXIZE = dsimple_lexize);
CREATE TEXT SEARCH PARSER shop.plain_parser (START = prsd_start, GETTOKEN = prsd_nexttoken, END = prsd_end, LEXTYPES = prsd_lextype);
COMMENT ON TEXT SEARCH PARSER shop.plain_parser IS 'the default one, again';

CREATE VIEW shop.paid AS SELECT id, amount FROM shop.orders WHERE status = 'paid';
ALTER DEFAULT PRIVILEGES IN SCHEMA shop GRANT SELECT ON TABLES TO zoo_reader;
CREATE PUBLICATION zoo_pub FOR TABLE shop.orders;

INSERT INTO shop.orders (status, amount, note, ship_to, price_band)
SELECT (ARRAY['new', 'paid', 'shipped']::shop.status[])[1 + g % 3], g * 1.5, 'order ' || g,
       ROW('street ' || g, 'city ' || (g % 7))::shop.address, shop.money_range(g, g + 10)
FROM generate_series(1, 200) g;
INSERT INTO shop.events SELECT g, date '2026-01-01' + g FROM generate_series(1, 600) g;
INSERT INTO shop.log VALUES ('one'), ('two');
INSERT INTO shop.archive_2026 VALUES ('kept', '2026-03-01');
SELECT nextval('shop.invoice_no');
CREATE MATERIALIZED VIEW shop.order_stats AS SELECT status, count(*) AS n FROM shop.orders GROUP BY status;
SELECT lo_from_bytea(424242, 'large object content'::bytea);
COMMENT ON LARGE OBJECT 424242 IS 'a blob';

DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '5min'); END $$;
DO $$ BEGIN EXECUTE format('ALTER ROLE zoo_reader IN DATABASE %I SET search_path = shop', current_database()); END $$;
