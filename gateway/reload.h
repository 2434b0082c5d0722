/*
 * reload.h: SIGHUP. The configuration is read again and applied where that drops no connection: log.level, the log
 * files (reopened: logrotate), tls.certificate/key (for new connections; established ones keep theirs). Keys that
 * need a restart are named in a warning when they changed; a configuration that does not load is refused whole
 * (logged with the key and line) and the gateway goes on as it was.
 */
#ifndef GW_RELOAD_H
#define GW_RELOAD_H

#include "config.h"
#include "server.h"

/* opens the access and audit logs `conf` names (closing the previous ones); NULL or an error */
const char *gw_logs_open(const gw_config_t *conf);
/* reads `path` again and applies it to `conf` (the running configuration) and `srv` */
void gw_reload(const char *path, gw_config_t *conf, gw_server_t *srv);

#endif
