package migrations

// MigrateOwn runs Migrate with the given own migrations instead of the embedded ones,
// so tests can apply failing or extra files.
var MigrateOwn = migrate

// FingerprintOf is Fingerprint over the given own migrations.
var FingerprintOf = fingerprint
