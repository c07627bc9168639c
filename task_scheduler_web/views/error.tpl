% rebase('base.tpl')
<section class="panel narrow" data-testid="error">
  <h1>{{code}} · {{title}}</h1>
  <p>{{message}}</p>
  <p><a href="/">{{t('error.back')}}</a></p>
</section>
