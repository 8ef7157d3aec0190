/*
 * A security label provider for drproof's tests, named "drproof_test". It accepts any
 * label on any object: the tests need labels to exist (as sepgsql or PostgreSQL
 * Anonymizer would write them), not a policy. Built by tests/integration/label_provider.py
 * against the server's own headers and loaded with shared_preload_libraries.
 */
#include "postgres.h"
#include "fmgr.h"
#include "commands/seclabel.h"

PG_MODULE_MAGIC;

void _PG_init(void);

static void
accept_any_label(const ObjectAddress *object, const char *label)
{
	(void) object;
	(void) label;
}

void
_PG_init(void)
{
	register_label_provider("drproof_test", accept_any_label);
}
