-- The seed's entities: users, the books they own, and cats.
-- Every row has a `version`, bumped by every update (the trigger below):
-- the cache keys bodies by it (see src/cache/nodes.rs).
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    version BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE books (
    id BIGSERIAL PRIMARY KEY,
    title TEXT NOT NULL,
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX books_owner_id ON books (owner_id);
CREATE INDEX books_title ON books (title text_pattern_ops);

CREATE TABLE cats (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    age INTEGER NOT NULL,
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX cats_owner_id ON cats (owner_id);

-- Every update bumps the row's version, whoever makes it (the service, or
-- a psql session that knows nothing about the cache).
CREATE FUNCTION bump_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER users_version BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION bump_version();
CREATE TRIGGER books_version BEFORE UPDATE ON books FOR EACH ROW EXECUTE FUNCTION bump_version();
CREATE TRIGGER cats_version BEFORE UPDATE ON cats FOR EACH ROW EXECUTE FUNCTION bump_version();
