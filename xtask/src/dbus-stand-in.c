/* libdbus-1.so.3 for a chaos node, which has no D-Bus and no systemd.
 *
 * Slurm's cgroup/v2 plugin links libdbus only to ask systemd for a scope;
 * cgroup.conf's IgnoreSystemd=yes tells it not to, so none of these is
 * called on a node. The real library would bring libsystemd, libzstd,
 * liblzma and libcap with it, about a megabyte of the drone image. If a
 * configuration ever does ask, the bus is never there: dbus_bus_get fails
 * with an error saying so, and everything else fails or does nothing.
 *
 * Built without the C library (it needs none), so it adds no needs to the
 * image; the symbol version comes from dbus-stand-in.map. */

#include <stddef.h>

typedef struct {
	const char *name;
	const char *message;
	unsigned int dummy;
	void *padding;
} DBusError;

void dbus_error_init(DBusError *error)
{
	error->name = NULL;
	error->message = NULL;
}

void dbus_error_free(DBusError *error)
{
	dbus_error_init(error);
}

unsigned int dbus_error_is_set(const DBusError *error)
{
	return error != NULL && error->name != NULL;
}

void *dbus_bus_get(int type, DBusError *error)
{
	(void)type;
	if (error != NULL) {
		error->name = "org.freedesktop.DBus.Error.NotSupported";
		error->message = "a chaos node has no D-Bus (cgroup.conf: IgnoreSystemd=yes)";
	}
	return NULL;
}

#define FAILS(name) unsigned int name(void) { return 0; }
#define NOTHING(name) void *name(void) { return NULL; }

FAILS(dbus_connection_send_with_reply)
FAILS(dbus_message_iter_append_basic)
FAILS(dbus_message_iter_append_fixed_array)
FAILS(dbus_message_iter_close_container)
FAILS(dbus_message_iter_get_arg_type)
FAILS(dbus_message_iter_init)
FAILS(dbus_message_iter_next)
FAILS(dbus_message_iter_open_container)
NOTHING(dbus_connection_flush)
NOTHING(dbus_connection_unref)
NOTHING(dbus_message_get_signature)
NOTHING(dbus_message_iter_abandon_container_if_open)
NOTHING(dbus_message_iter_get_basic)
NOTHING(dbus_message_iter_init_append)
NOTHING(dbus_message_new_method_call)
NOTHING(dbus_message_unref)
NOTHING(dbus_pending_call_block)
NOTHING(dbus_pending_call_steal_reply)
NOTHING(dbus_pending_call_unref)
