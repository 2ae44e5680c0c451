;; hello: answers a request with its own body and content type (a JSON body comes back as the
;; same JSON; an empty body as {}). Host ABI: docs/FUNCTIONS.md. Build: wat2wasm hello.wat.
(module
  (import "aerodb" "request_read" (func $read (param i32 i32 i32) (result i32)))
  (import "aerodb" "request_header" (func $header_in (param i32 i32 i32 i32) (result i32)))
  (import "aerodb" "response_header" (func $header_out (param i32 i32 i32 i32) (result i32)))
  (import "aerodb" "response_write" (func $write (param i32 i32) (result i32)))
  (import "aerodb" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "content-type")            ;; 12 bytes
  (data (i32.const 16) "application/json")       ;; 16 bytes
  (data (i32.const 32) "hello: echoing the body") ;; 23 bytes
  (data (i32.const 56) "{}")                     ;; 2 bytes
  ;; 64..191: the request's content type; 1024..: the body
  (func (export "handle") (result i32)
    (local $len i32) (local $pages i32) (local $type i32)
    (local.set $len (call $read (i32.const 3) (i32.const 0) (i32.const 0)))
    (local.set $pages (i32.div_u (i32.add (local.get $len) (i32.const 66559)) (i32.const 65536)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 1))))))
    (drop (call $read (i32.const 3) (i32.const 1024) (local.get $len)))
    (local.set $type (call $header_in (i32.const 0) (i32.const 12) (i32.const 64) (i32.const 128)))
    (if (i32.and (i32.gt_s (local.get $type) (i32.const 0)) (i32.le_s (local.get $type) (i32.const 128)))
      (then (drop (call $header_out (i32.const 0) (i32.const 12) (i32.const 64) (local.get $type))))
      (else (drop (call $header_out (i32.const 0) (i32.const 12) (i32.const 16) (i32.const 16)))))
    (drop (call $log (i32.const 1) (i32.const 32) (i32.const 23)))
    (if (i32.eqz (local.get $len))
      (then (drop (call $write (i32.const 56) (i32.const 2))))
      (else (drop (call $write (i32.const 1024) (local.get $len)))))
    (i32.const 0)))
