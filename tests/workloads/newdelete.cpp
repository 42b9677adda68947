/*
 * The C++ ground-truth workload (tests/it/allocators): every form of operator new and delete a
 * program calls — plain, array, nothrow, aligned (C++17), sized delete (C++14) — from named
 * functions. build.rs builds it linked with tcmalloc (`newdelete`: tcmalloc defines its own
 * operator new/delete, which alloctrace must probe) and with libstdc++'s alone
 * (`newdelete_glibc`: operator new calls glibc's malloc).
 * Usage:
 *   newdelete           runs at once
 *   newdelete wait      says `ready` and waits for one byte on standard input first (--pid)
 * Each new expression is one allocation of the bytes operator new is asked for (sizeof the
 * type times the count; the element types have trivial destructors, so arrays carry no cookie),
 * charged to the function holding the expression; each delete one free, charged to the
 * function that allocated. The functions have C linkage: their symbols are their plain names,
 * as the ground truth writes them (a C++ name would be demangled `new_single()`). It writes its ground truth (gt.h) as the C workloads do.
 */
#include <new>

#include "gt.h"

struct Obj {
    long v[5]; /* 40 bytes */
};

struct alignas(64) Aligned {
    char b[192];
};

/* C++ has no designated initializers that skip members. */
#define TALLY(name) { name, 0, 0, 0, 0, {} }

enum {
    SINGLE_N = 200, ARRAY_N = 100, ARRAY_LEN = 25, NOTHROW_N = 60, ALIGNED_N = 40,
    LEAK_N = 30, OTHER_N = 50,
};

static struct tally t_single = TALLY("new_single");
static struct tally t_array = TALLY("new_array");
static struct tally t_nothrow = TALLY("new_nothrow");
static struct tally t_aligned = TALLY("new_aligned");
static struct tally t_leak = TALLY("new_leak");
static struct tally t_other = TALLY("new_for_other");
static struct tally t_delete_else = TALLY("delete_elsewhere");

static Obj *leaked[LEAK_N];
static Obj *other[OTHER_N];

/* new Obj / delete (sized delete: Obj is complete). */
extern "C" NOINLINE void new_single()
{
    for (int i = 0; i < SINGLE_N; i++) {
        Obj *o = static_cast<Obj *>(gt_check(new Obj(), "new"));
        gt_alloc(&t_single, sizeof(Obj));
        delete o;
        gt_free(&t_single, sizeof(Obj));
    }
}

/* new int[] / delete[]. */
extern "C" NOINLINE void new_array()
{
    for (int i = 0; i < ARRAY_N; i++) {
        int *a = static_cast<int *>(gt_check(new int[ARRAY_LEN], "new[]"));
        gt_alloc(&t_array, ARRAY_LEN * sizeof(int));
        delete[] a;
        gt_free(&t_array, ARRAY_LEN * sizeof(int));
    }
}

/* new (std::nothrow) Obj; two thirds deleted. */
extern "C" NOINLINE void new_nothrow()
{
    for (int i = 0; i < NOTHROW_N; i++) {
        Obj *o = static_cast<Obj *>(gt_check(new (std::nothrow) Obj(), "new(nothrow)"));
        gt_alloc(&t_nothrow, sizeof(Obj));
        if (i % 3 != 0) {
            delete o;
            gt_free(&t_nothrow, sizeof(Obj));
        }
    }
}

/* operator new(size_t, align_val_t) and the aligned sized delete. */
extern "C" NOINLINE void new_aligned()
{
    for (int i = 0; i < ALIGNED_N; i++) {
        Aligned *a = static_cast<Aligned *>(gt_check(new Aligned(), "new(align)"));
        gt_alloc(&t_aligned, sizeof(Aligned));
        delete a;
        gt_free(&t_aligned, sizeof(Aligned));
    }
}

extern "C" NOINLINE void new_leak()
{
    for (int i = 0; i < LEAK_N; i++) {
        leaked[i] = static_cast<Obj *>(gt_check(new Obj(), "new"));
        gt_alloc(&t_leak, sizeof(Obj));
    }
}

extern "C" NOINLINE void new_for_other()
{
    for (int i = 0; i < OTHER_N; i++) {
        other[i] = static_cast<Obj *>(gt_check(new Obj(), "new"));
        gt_alloc(&t_other, sizeof(Obj));
    }
}

/* Deletes new_for_other's objects: the frees are its; this function allocates nothing. */
extern "C" NOINLINE void delete_elsewhere()
{
    for (int i = 0; i < OTHER_N; i++) {
        delete other[i];
        gt_free(&t_other, sizeof(Obj));
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        gt_ready_and_wait();
    new_single();
    new_array();
    new_nothrow();
    new_aligned();
    new_leak();
    new_for_other();
    delete_elsewhere();
    static const struct tally *const all[] = {
        &t_single, &t_array, &t_nothrow, &t_aligned, &t_leak, &t_other, &t_delete_else,
    };
    /* Unknown frees: none of ours; the C++ runtime's start-up allocation (libstdc++'s
     * emergency exception pool) is never freed. */
    gt_write(all, GT_COUNT(all), 0);
    gt_write_all(1, "done\n", 5);
    return 0;
}
