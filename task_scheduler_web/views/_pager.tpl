<nav class="pager" aria-label="{{t('pager.label')}}">
  <span class="muted">{{t('pager.range', first=pager['first'], last=pager['last'], total=pager['total'])}}</span>
  % if pager['prev']:
  <a class="btn btn-quiet" href="{{pager['prev']}}" rel="prev">{{t('pager.prev')}}</a>
  % end
  % if pager['next']:
  <a class="btn btn-quiet" href="{{pager['next']}}" rel="next">{{t('pager.next')}}</a>
  % end
</nav>
