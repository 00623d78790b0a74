#ifndef BUTTERFLY_CZEROMQ_SHIM_H
#define BUTTERFLY_CZEROMQ_SHIM_H
#include <zmq.h>
#endif
