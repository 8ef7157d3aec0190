-- Objects a restore must bring back *working*, not only holding the same rows: sequences
-- that must stay ahead of their data (a bigserial and an identity column), foreign keys,
-- a materialized view that must come back populated, btree indexes for amcheck to verify,
-- and an extension that must still be installed. Runs after the built-in customers and
-- orders tables are created, so line_items can reference orders.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE products (
    id     bigserial PRIMARY KEY,
    sku    text NOT NULL UNIQUE,
    price  numeric(10, 2) NOT NULL CHECK (price >= 0)
);

CREATE TABLE line_items (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders (id),
    product_id  bigint NOT NULL REFERENCES products (id),
    quantity    integer NOT NULL CHECK (quantity > 0)
);

INSERT INTO products (sku, price)
SELECT 'P-' || lpad(i::text, 4, '0'), (i * 7 % 500) + 0.99 FROM generate_series(1, 120) AS i;

INSERT INTO line_items (order_id, product_id, quantity)
SELECT o.id, 1 + (o.id * 13) % 120, 1 + o.id % 4 FROM orders AS o ORDER BY o.id;

CREATE INDEX line_items_product_idx ON line_items (product_id);
CREATE INDEX products_sku_trgm_idx ON products USING gin (sku gin_trgm_ops);

CREATE MATERIALIZED VIEW product_revenue AS
    SELECT p.id, p.sku, sum(li.quantity * p.price) AS revenue
      FROM products AS p JOIN line_items AS li ON li.product_id = p.id
     GROUP BY p.id, p.sku;
CREATE UNIQUE INDEX product_revenue_id_idx ON product_revenue (id);

GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_readonly;
