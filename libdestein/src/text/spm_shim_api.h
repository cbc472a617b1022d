// Private: the C interface of libdestein_spm, a tiny shared library that wraps
// libsentencepiece.
//
// Why a separate library loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): Debian's
// libsentencepiece carries its own copy of protobuf-lite 3.14 and exports those symbols,
// while LibTorch links the system protobuf 3.21. Linked into one program, the two
// interpose each other's protobuf symbols and the process crashes at start-up (seen here:
// SIGSEGV in protobuf static initialisation, or "compiled against version 3.14.0"
// aborts). Isolated behind DEEPBIND, each sees only its own protobuf.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSPM_ABI_VERSION 1

typedef struct dspm_model dspm_model;

int dspm_abi_version(void);
/* Returns NULL and writes a message into err on failure. */
dspm_model* dspm_load(const char* path, char* err, size_t err_len);
void dspm_free(dspm_model* model);
/* Encodes UTF-8 text; *ids is malloc'ed (free with dspm_free_buffer). Returns 0 on success. */
int dspm_encode(const dspm_model* model, const char* text, size_t len, int32_t** ids, size_t* n,
                char* err, size_t err_len);
/* Decodes ids; *text is malloc'ed, not NUL-terminated beyond *len. Returns 0 on success. */
int dspm_decode(const dspm_model* model, const int32_t* ids, size_t n, char** text, size_t* len,
                char* err, size_t err_len);
int dspm_piece_size(const dspm_model* model);
int dspm_bos_id(const dspm_model* model);
int dspm_eos_id(const dspm_model* model);
int dspm_pad_id(const dspm_model* model);
int dspm_unk_id(const dspm_model* model);
/* 1 when the id is a control symbol (BOS/EOS/PAD...) or unused, else 0. */
int dspm_is_control(const dspm_model* model, int id);
/* Writes the piece string of id (NUL-terminated, truncated to buf_len). */
int dspm_id_to_piece(const dspm_model* model, int id, char* buf, size_t buf_len);
/* SentencePieceTrainer::Train with a command-line style argument string. */
int dspm_train(const char* args, char* err, size_t err_len);
void dspm_free_buffer(void* buffer);

#ifdef __cplusplus
}
#endif
