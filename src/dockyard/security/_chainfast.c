/* dockyard.security._chainfast: the audit writer's inner loops in C, and the daemon's audit queue.
 *
 * The writer process (audit_writer.py) formats one JSON line per API request and chains it with SHA-256
 * (audit.py). In Python that is ~5 us of CPU per record, which on a small machine competes with the
 * daemon serving the requests; here it is a fraction of a microsecond. The functions are byte-for-byte
 * replacements of the Python reference loops (audit._chain_py, audit_writer._texts_py and _render_py),
 * which the unit tests compare them against; when this module is not built, those loops serve.
 *
 *   chain(bodies, head) -> (lines, head)
 *       line = f'{body},"prev":"{head}"}}'.encode(); head = sha256(line).hexdigest(), for each body.
 *   texts(records, fixed_of, offset) -> list[str]
 *       The JSON text of each record (see audit_writer.Record); fixed_of(shape) -> (fixed, done) gives a
 *       shape's fixed middle text and whether the record has the status tail.
 *   render(templates, data, pos, count, head, offset, dropped) -> (lines, head, pos)
 *       What the writer uses: up to count records packed in data from pos, rendered (templates[i] is
 *       fixed_of's (fixed, done) for shape i) and chained from head into one bytes object, each line
 *       followed by a newline; the first gets "dropped_before" when dropped > 0. No object per record.
 *   RecordBuffer, unpack(shapes, data) -> list[Record]
 *       The serving loop's audit queue: one add() per API request packs the record into bytes (the format
 *       audit_records.py documents); the writer unpacks them. References: audit_records.RecordBufferPy
 *       and audit_records._unpack_py.
 *
 * SHA-256 is OpenSSL's (what hashlib uses, SHA-NI where the CPU has it).
 * Nothing here releases the GIL, so the module's static state needs no lock.
 *
 * This file is the module (its method table and init); the functions and the type are in the
 * chainfast_*.c files that chainfast.h lists, compiled into this one extension (setup.py).
 */
#include "chainfast.h"

static PyMethodDef methods[] = {
    {"chain", (PyCFunction)(void (*)(void))cf_chain, METH_FASTCALL,
     "chain(bodies, head) -> (lines, head): each body as a chained line, and the new chain head."},
    {"texts", (PyCFunction)(void (*)(void))cf_texts, METH_FASTCALL,
     "texts(records, fixed_of, offset) -> list[str]: each audit record's JSON text."},
    {"unpack", (PyCFunction)(void (*)(void))cf_unpack, METH_FASTCALL,
     "unpack(shapes, data) -> list[Record]: the records RecordBuffer.take() packed."},
    {"render", (PyCFunction)(void (*)(void))cf_render, METH_FASTCALL,
     "render(templates, data, pos, count, head, offset, dropped) -> (lines, head, pos): up to count packed "
     "records from data[pos:] as chained lines, each followed by a newline."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dockyard.security._chainfast",
    "The audit writer's inner loops in C (see audit._chain_py and audit_writer._texts_py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__chainfast(void)
{
    if (cf_sha256_init() < 0)
        return NULL;
    if (PyType_Ready(&cf_RecordBufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RecordBuffer", (PyObject *)&cf_RecordBufferType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
