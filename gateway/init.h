/*
 * init.h: `lxd-gateway init`: first-time set-up of a state directory (key pairs and a config to edit).
 */
#ifndef GW_INIT_H
#define GW_INIT_H

/* runs the `init` subcommand with its own arguments; returns the process exit code */
int gw_init_main(int argc, char **argv);

#endif
