from lit_imgcls.cli import main

raise SystemExit(main())
