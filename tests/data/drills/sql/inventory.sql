CREATE TABLE inventory (
    sku      text PRIMARY KEY,
    quantity integer NOT NULL CHECK (quantity >= 0),
    updated  timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
);
INSERT INTO inventory (sku, quantity)
SELECT 'SKU-' || lpad(i::text, 5, '0'), (i * 37) % 500 FROM generate_series(1, 400) AS i;
CREATE MATERIALIZED VIEW low_stock AS SELECT sku FROM inventory WHERE quantity < 20;
