/* Stage-to-stage streams and on-chip arrays: Intel FPGA channels and local memories, or an
 * emulation that any OpenCL 1.2 device can run.
 *
 * A stream carries pixels in raster order, each pixel's channels in words of WIDTH values, images
 * one after another; the width is the edge's, chosen by the design (cnnfpga.design), and a blob's
 * channels are padded with zeros to whole words.  A word is a struct of WIDTH values stored as
 * narrowly as the edge's format allows: float (F32), the bits of an fp16 value (F16, ushort: read
 * with vload_half, written with vstore_half_rte, so no device needs cl_khr_fp16), or a
 * two's-complement integer of 8, 16 or 32 bits (fixed point).  The code generator declares one
 * word type per edge and the macros that read and write its values (IN_VALUE, OUT_SET, ...).
 *
 * Without -D CNNFPGA_EMULATE_CHANNELS this is the source aoc gets: channels are Intel channels of
 * the depths the design chose, on-chip arrays are __local (M20K), and every stage is a task
 * (max_global_work_dim(0)) launched at once with the others, each on its own command queue.
 *
 * With -D CNNFPGA_EMULATE_CHANNELS each channel becomes a __global buffer holding the whole stream,
 * passed to its writer and its reader with a cursor in each; the host launches the stages in
 * dependency order, so a FIFO needs no synchronisation.  On-chip arrays become __global scratch
 * buffers passed as arguments (the host allocates them), because a CPU's local memory is small
 * (1 MiB on PoCL) and the same code must run.  Channel and on-chip names appear in a kernel's
 * parameter list through *_PARAM macros that vanish on the FPGA, so they end in their own comma.
 */
#ifndef CNNFPGA_CHANNELS_H
#define CNNFPGA_CHANNELS_H

#ifdef CNNFPGA_EMULATE_CHANNELS

#define SINGLE_WORK_ITEM   /* launched as a 1x1 NDRange: no attribute needed (others warn about aoc's) */
#define CHANNEL(word_type, name, fifo_depth)
#define CHANNEL_PARAM(word_type, name) __global word_type *restrict name,
#define CHANNEL_CURSOR(name) uint name##_at = 0;
#define READ_CHANNEL(name) (name[name##_at++])
#define WRITE_CHANNEL(name, word) (name[name##_at++] = (word))
#define ONCHIP_PARAM(value_type, name) __global value_type *restrict name,
#define ONCHIP_ARRAY(value_type, name, size)
#define ONCHIP __global
#define UNROLL   /* a CPU compiler unrolls and vectorises as it sees fit: same arithmetic, far quicker builds */
#define PIPELINED

#else

#pragma OPENCL EXTENSION cl_intel_channels : enable
#define SINGLE_WORK_ITEM __attribute__((max_global_work_dim(0)))   /* aoc: a task, pipelined loops */
#define CHANNEL(word_type, name, fifo_depth) channel word_type name __attribute__((depth(fifo_depth)));
#define CHANNEL_PARAM(word_type, name)
#define CHANNEL_CURSOR(name)
#define READ_CHANNEL(name) read_channel_intel(name)
#define WRITE_CHANNEL(name, word) write_channel_intel(name, (word))
#define ONCHIP_PARAM(value_type, name)
#define ONCHIP_ARRAY(value_type, name, size) __local value_type name[size];
#define ONCHIP __local
#define UNROLL _Pragma("unroll")   /* a loop of constant trip count becomes parallel hardware */
/* a pipelined loop, one iteration per cycle: never unrolled, even where its trip count is small, so
   that its iterations stay the cycles the design model counts */
#define PIPELINED _Pragma("unroll 1")

#endif

/* Global-memory (DDR) ports: where a segment of stages starts and ends.  The same on every device. */
#define MEMORY_IN_PARAM(word_type, name) __global const word_type *restrict name,
#define MEMORY_OUT_PARAM(word_type, name) __global word_type *restrict name,
#define MEMORY_CURSOR(name) uint name##_at = 0;
#define READ_MEMORY(name) (name[name##_at++])
#define WRITE_MEMORY(name, word) (name[name##_at++] = (word))

/* Loop iterations a stage ran, counted only in builds for PoCL's checks (-D CNNFPGA_COUNT_CYCLES;
 * aoc builds leave it out): every pipelined loop's body starts with COUNT_CYCLE. */
#ifdef CNNFPGA_COUNT_CYCLES
#define CYCLE_COUNTER ulong cycles = 0;
#define COUNT_CYCLE cycles++;
#define STORE_CYCLES(stats, slot) (stats)[2 * (slot) + 1] += cycles;
#else
#define CYCLE_COUNTER
#define COUNT_CYCLE
#define STORE_CYCLES(stats, slot)
#endif

#endif
