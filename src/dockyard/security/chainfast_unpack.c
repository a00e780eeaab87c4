/* unpack(shapes, data) -> list[Record] (reference: audit_records._unpack_py), and the check of packed
 * records that render() shares. */

#include "chainfast.h"

/* One record's request id and tail, checked (audit_records._unpack_py's checks, in its order).
 * Returns the record's end offset, or -1 with ValueError set. */
Py_ssize_t
cf_check_record(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t nshapes)
{
    if (end - pos < 5) {
        PyErr_SetString(PyExc_ValueError, "truncated audit record");
        return -1;
    }
    uint32_t index = get_u32(d + pos);
    Py_ssize_t n = d[pos + 4];
    pos += 5;
    if (end - pos < n + 28) {
        PyErr_SetString(PyExc_ValueError, "truncated audit record");
        return -1;
    }
    if ((Py_ssize_t)index >= nshapes) {
        PyErr_Format(PyExc_ValueError, "audit record shape index %u out of range", (unsigned)index);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (d[pos + i] & 0x80) {
            PyErr_SetString(PyExc_ValueError, "audit record request id is not ASCII");
            return -1;
        }
    pos += n;
    int32_t status = (int32_t)get_u32(d + pos);
    int64_t nbytes = (int64_t)get_u64(d + pos + 4);
    double started = get_f64(d + pos + 12);
    if (!(status == -1 && nbytes == -1 && isnan(started)) && (status < 0 || nbytes < 0 || isnan(started))) {
        PyErr_SetString(PyExc_ValueError, "audit record with an impossible status, byte count or start time");
        return -1;
    }
    return pos + 28;
}

/* One record's tuple (the data was checked). */
static PyObject *
record_tuple(const unsigned char *d, Py_ssize_t pos, PyObject *shapes)
{
    PyObject *rec = PyTuple_New(6);
    if (rec == NULL)
        return NULL;
    PyObject *shape = PyTuple_GET_ITEM(shapes, get_u32(d + pos));
    Py_INCREF(shape);
    PyTuple_SET_ITEM(rec, 0, shape);
    Py_ssize_t n = d[pos + 4];
    pos += 5;
    PyObject *rid = PyUnicode_New(n, 127);
    if (rid == NULL)
        goto error;
    memcpy(PyUnicode_DATA(rid), d + pos, (size_t)n);
    PyTuple_SET_ITEM(rec, 1, rid);
    pos += n;
    int32_t status = (int32_t)get_u32(d + pos);
    PyObject *values[4];
    if (status == -1) {
        values[0] = values[1] = values[2] = Py_None;
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
    } else {
        values[0] = PyLong_FromLong(status);
        values[1] = PyLong_FromLongLong((long long)(int64_t)get_u64(d + pos + 4));
        values[2] = PyFloat_FromDouble(get_f64(d + pos + 12));
    }
    values[3] = PyFloat_FromDouble(get_f64(d + pos + 20));
    for (int i = 0; i < 4; i++) /* set even when NULL: the tuple's dealloc skips them */
        PyTuple_SET_ITEM(rec, 2 + i, values[i]);
    for (int i = 0; i < 4; i++)
        if (values[i] == NULL)
            goto error;
    return rec;
error:
    Py_DECREF(rec);
    return NULL;
}

PyObject *
cf_unpack(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "unpack() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyList_Check(args[0]) && !PyTuple_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "shapes must be a list or tuple, not %.200s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    /* Making objects can run the GC and so a finalizer, which must not change the shapes or the data
     * checked in the first pass under the second: a tuple of the shapes, and bytes of the data. */
    PyObject *data;
    if (PyBytes_CheckExact(args[1])) {
        Py_INCREF(args[1]);
        data = args[1];
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        data = PyBytes_FromStringAndSize(view.buf, view.len);
        PyBuffer_Release(&view);
        if (data == NULL)
            return NULL;
    }
    PyObject *shapes = PySequence_Tuple(args[0]);
    PyObject *out = NULL;
    if (shapes == NULL)
        goto done;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data), count = 0, nshapes = PyTuple_GET_SIZE(shapes);
    for (Py_ssize_t pos = 0; pos < end; count++)
        if ((pos = cf_check_record(d, pos, end, nshapes)) < 0)
            goto done;
    out = PyList_New(count);
    if (out == NULL)
        goto done;
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *rec = record_tuple(d, pos, shapes);
        if (rec == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, rec);
        pos += REC_FIXED + d[pos + 4];
    }
done:
    Py_XDECREF(shapes);
    Py_DECREF(data);
    return out;
}
