-- Extensions bring their own operators, operator classes and families, casts, types and
-- access methods (pgvector: hnsw, ivfflat). CREATE EXTENSION recreates them, so they are
-- the extension's part, never parts of their own; a table and an index use them.
CREATE EXTENSION vector;
CREATE EXTENSION cube;
CREATE TABLE items (id int PRIMARY KEY, embedding vector(3), box cube);
INSERT INTO items SELECT g, ARRAY[g, g * 2, g * 3]::vector, cube(g, g + 1) FROM generate_series(1, 50) g;
CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops);
CREATE INDEX items_box ON items USING gist (box);
