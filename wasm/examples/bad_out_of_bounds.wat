;; Deliberately bad: reads far outside its memory.
(module
  (memory 1)
  (func (export "oob") (result i32)
    (i32.load (i32.const 1000000))))
