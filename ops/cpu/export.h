// Symbol visibility of the aot entry points (the library is built with -fvisibility=hidden).
#pragma once
#define MINDPET_AOT_EXPORT extern "C" __attribute__((visibility("default")))
