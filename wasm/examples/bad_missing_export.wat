;; Deliberately bad: a JSON handler without the alloc and memory exports the ABI needs.
(module
  (func (export "handle") (param i32 i32) (result i64)
    (i64.const 0)))
