/* Stage-to-stage streams: Intel FPGA channels, or an emulation any OpenCL 1.2 device can run.
 *
 * A stream carries one pixel's channels eight at a time (an 8-vector), pixels in raster order,
 * images one after another; a blob's channel count is padded with zeros to a multiple of 8.
 * Three element formats:
 *   F32  float8          the value as computed
 *   F16  half8           the value rounded to fp16 (round to nearest even), widened to float on read;
 *                        a value that becomes infinite counts in the writing stage's `saturated`
 *   I32  int8            a fixed-point value (raw integer; the format is known to both stages)
 *
 * With -D CNNFPGA_EMULATE_CHANNELS each channel becomes a __global buffer passed to both the
 * writing and the reading kernel, with a cursor in each.  The host launches the stages in
 * dependency order (the writer finishes before the reader starts), so the buffer holds the
 * whole stream and a FIFO needs no synchronisation.  Without it the same kernel text compiles
 * to read_channel_intel / write_channel_intel for aoc.  A channel name appears in the kernel's
 * parameter list through CHANNEL_PARAM_* (nothing on the FPGA), so such parameters go first
 * and end in their own comma.
 */
#ifndef CNNFPGA_CHANNELS_H
#define CNNFPGA_CHANNELS_H

/* An fp16 store's overflow, counted as cnnfpga.precision.store counts it: a finite value with
 * |v| >= 65520 rounds to infinity (65520 lies halfway between the largest half, 65504, and 2^16,
 * and the tie goes to the even neighbour, 2^16).  Returns v, so that a store can wrap it. */
float8 fx_count_half_overflow(float8 v, ulong *saturated)
{
    const int8 overflow = isgreaterequal(fabs(v), (float8)(65520.0f)) & isfinite(v);   /* -1 where true */
    const int4 fours = overflow.lo + overflow.hi;
    const int2 twos = fours.lo + fours.hi;
    *saturated += (ulong)(-(twos.x + twos.y));
    return v;
}

#ifdef CNNFPGA_EMULATE_CHANNELS

#define SINGLE_WORK_ITEM   /* launched as a 1x1 NDRange: no attribute needed (others warn about aoc's) */
#define CHANNEL_F32(name, depth)
#define CHANNEL_F16(name, depth)
#define CHANNEL_I32(name, depth)
#define CHANNEL_PARAM_F32(name) __global float8 *restrict name,
#define CHANNEL_PARAM_F16(name) __global half *restrict name,
#define CHANNEL_PARAM_I32(name) __global int8 *restrict name,
#define CHANNEL_CURSOR(name) uint name##_at = 0;
#define READ_CHANNEL_F32(name) (name[name##_at++])
#define READ_CHANNEL_F16(name) vload_half8(name##_at++, name)
#define READ_CHANNEL_I32(name) (name[name##_at++])
#define WRITE_CHANNEL_F32(name, v) (name[name##_at++] = (v))
#define WRITE_CHANNEL_F16(name, v) vstore_half8_rte(fx_count_half_overflow((v), &saturated), name##_at++, name)
#define WRITE_CHANNEL_I32(name, v) (name[name##_at++] = (v))

#else

#pragma OPENCL EXTENSION cl_intel_channels : enable
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#define SINGLE_WORK_ITEM __attribute__((max_global_work_dim(0)))   /* aoc: a task, pipelined loops */
#define CHANNEL_F32(name, depth) channel float8 name __attribute__((depth(depth)));
#define CHANNEL_F16(name, depth) channel half8 name __attribute__((depth(depth)));
#define CHANNEL_I32(name, depth) channel int8 name __attribute__((depth(depth)));
#define CHANNEL_PARAM_F32(name)
#define CHANNEL_PARAM_F16(name)
#define CHANNEL_PARAM_I32(name)
#define CHANNEL_CURSOR(name)
#define READ_CHANNEL_F32(name) read_channel_intel(name)
#define READ_CHANNEL_F16(name) convert_float8(read_channel_intel(name))
#define READ_CHANNEL_I32(name) read_channel_intel(name)
#define WRITE_CHANNEL_F32(name, v) write_channel_intel(name, (v))
#define WRITE_CHANNEL_F16(name, v) write_channel_intel(name, convert_half8_rte(fx_count_half_overflow((v), &saturated)))
#define WRITE_CHANNEL_I32(name, v) write_channel_intel(name, (v))

#endif

/* Global-memory (DDR) ports: where a segment of stages starts and ends.  The same on every device. */
#define MEMORY_PARAM_F32(name) __global float8 *restrict name,
#define MEMORY_PARAM_F16(name) __global half *restrict name,
#define MEMORY_PARAM_I32(name) __global int8 *restrict name,
#define MEMORY_CURSOR(name) uint name##_at = 0;
#define READ_MEMORY_F32(name) (name[name##_at++])
#define READ_MEMORY_F16(name) vload_half8(name##_at++, name)
#define READ_MEMORY_I32(name) (name[name##_at++])
#define WRITE_MEMORY_F32(name, v) (name[name##_at++] = (v))
#define WRITE_MEMORY_F16(name, v) vstore_half8_rte(fx_count_half_overflow((v), &saturated), name##_at++, name)
#define WRITE_MEMORY_I32(name, v) (name[name##_at++] = (v))

#endif
