/* The parts of dockyard.security._chainfast (one extension module, built from several files: see
 * _chainfast.c for what the module does) and what they share.
 *
 *   _chainfast.c         the module: its method table, the RecordBuffer type's registration, init
 *   chainfast_chain.c    SHA-256 (OpenSSL) and chain()
 *   chainfast_format.c   number and time formatting shared by texts() and render()
 *   chainfast_text.c     texts()
 *   chainfast_buffer.c   RecordBuffer (the daemon's audit queue)
 *   chainfast_unpack.c   checking packed records, unpack()
 *   chainfast_render.c   render()
 *
 * Everything not declared here is static to its file. Nothing in the module releases the GIL, so the
 * static state (the formatter's cached seconds text, render's output buffer, the EVP context) needs no
 * lock; each piece of it is defined in the one file that uses it.
 */
#ifndef DOCKYARD_CHAINFAST_H
#define DOCKYARD_CHAINFAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <float.h>

/* ---- the module's functions and type (_chainfast.c's method table) ---- */

PyObject *cf_chain(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *cf_texts(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *cf_unpack(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *cf_render(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
extern PyTypeObject cf_RecordBufferType;

/* ---- SHA-256 (chainfast_chain.c) ---- */

/* Sets up OpenSSL's SHA-256 where it is used through EVP (nothing to do otherwise); -1 with ImportError. */
int cf_sha256_init(void);
/* The SHA-256 of data[0:n] as 64 lowercase hex digits (not terminated); -1 with RuntimeError. */
int cf_sha256_hex(const char *data, size_t n, char hex[64]);

/* ---- arguments ---- */

/* A number argument as a double: float or int only (what the daemon sends), as Python's arithmetic on
 * them would convert it (RecordBufferPy's _number). Inline: RecordBuffer.add reads one per API request. */
static inline int
cf_as_double(PyObject *v, const char *what, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if (PyFloat_Check(v) || PyLong_Check(v)) {
        *out = PyFloat_AsDouble(v);
        return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be a float, not %.200s", what, Py_TYPE(v)->tp_name);
    return -1;
}

/* ---- formatting (chainfast_format.c) ---- */

const char *cf_format_ms(double x, char buf[32]);
int cf_time_second(double t, long long *whole);
Py_ssize_t cf_time_head(double t, long long whole, char *head);

#define SECOND_TEXT_MAX 64 /* the size of the cached seconds text (chainfast_format.c) */
#define TIME_HEAD_MAX (SECOND_TEXT_MAX + 64)

/* Decimal digits of v (no sign) written backwards ending at end; returns the start. */
static inline char *
digits_back(char *end, unsigned long long v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* ---- packed records (chainfast_buffer.c writes them, chainfast_unpack.c and render read them) ---- */

#define REC_FIXED (4 + 1 + 4 + 8 + 8 + 8) /* a record's bytes besides its request id */
#define REC_MAX_RID 255

Py_ssize_t cf_check_record(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t nshapes);

static inline uint32_t
get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if !PY_LITTLE_ENDIAN
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if !PY_LITTLE_ENDIAN
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline double
get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

#endif /* DOCKYARD_CHAINFAST_H */
